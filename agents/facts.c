/*
 * facts.c: device facts from the kernel (see facts.h).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "facts.h"
#include "fg_util.h"

#define SECUREBOOT_VAR "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

static void path_of(const char *root, const char *p, char *out, size_t n)
{
	snprintf(out, n, "%s%s", root, p);
}

/* First line of a small file, trimmed, into out; "" if unreadable. */
static void read_line(const char *root, const char *p, char *out, size_t n)
{
	char path[4096], *text = NULL;
	out[0] = '\0';
	path_of(root, p, path, sizeof path);
	if (fg_read_file(path, 64 * 1024, &text, NULL, NULL, 0) != 0)
		return;
	size_t l = strcspn(text, "\r\n");
	text[l] = '\0';
	char *s = text;
	while (isspace((unsigned char)*s))
		s++;
	l = strlen(s);
	while (l && isspace((unsigned char)s[l - 1]))
		s[--l] = '\0';
	fg_strlcpy(out, s, n);
	free(text);
}

/* KEY=value or KEY="value" from os-release. */
static void os_release_value(const char *text, const char *key, char *out, size_t n)
{
	size_t kl = strlen(key);
	out[0] = '\0';
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (strncmp(l, key, kl) != 0 || l[kl] != '=')
			continue;
		const char *v = l + kl + 1;
		size_t vl = strcspn(v, "\n");
		if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
			v++;
			vl -= 2;
		}
		snprintf(out, n, "%.*s", (int)vl, v);
		return;
	}
}

/*
 * Read every fact; none is required (a container has no DMI, efivars or
 * TPM). Secure boot: the efivar holds 4 attribute bytes and the value byte;
 * no variable on an EFI system means disabled, no EFI at all means unknown.
 */
void facts_read(const char *root, struct agent_facts *f)
{
	char path[4096], *text = NULL;
	struct utsname u;
	struct stat sb;

	memset(f, 0, sizeof *f);
	if (root == NULL)
		root = getenv("FLEETGATE_FACTS_ROOT");
	if (root == NULL)
		root = "";
	if (*root) {
		read_line(root, "/proc/sys/kernel/hostname", f->hostname, sizeof f->hostname);
	} else if (gethostname(f->hostname, sizeof f->hostname) != 0) {
		f->hostname[0] = '\0';
	}
	f->hostname[sizeof f->hostname - 1] = '\0';
	read_line(root, "/etc/machine-id", f->machine_id, sizeof f->machine_id);
	path_of(root, "/etc/os-release", path, sizeof path);
	if (fg_read_file(path, 64 * 1024, &text, NULL, NULL, 0) != 0) {
		path_of(root, "/usr/lib/os-release", path, sizeof path);
		fg_read_file(path, 64 * 1024, &text, NULL, NULL, 0);
	}
	if (text) {
		os_release_value(text, "ID", f->os_id, sizeof f->os_id);
		os_release_value(text, "VERSION_ID", f->os_version, sizeof f->os_version);
		os_release_value(text, "PRETTY_NAME", f->os_pretty_name, sizeof f->os_pretty_name);
		free(text);
	}
	/* The machine type is the running kernel's even under a fake root. */
	if (uname(&u) == 0) {
		fg_strlcpy(f->kernel_release, u.release, sizeof f->kernel_release);
		fg_strlcpy(f->arch, u.machine, sizeof f->arch);
	}
	if (*root)
		read_line(root, "/proc/sys/kernel/osrelease", f->kernel_release, sizeof f->kernel_release);
	read_line(root, "/sys/class/dmi/id/product_uuid", f->dmi_product_uuid, sizeof f->dmi_product_uuid);
	read_line(root, "/sys/class/dmi/id/product_serial", f->dmi_product_serial,
		  sizeof f->dmi_product_serial);

	/* efivars: 4 bytes of attributes, then the value byte. */
	f->secure_boot = -1;
	path_of(root, SECUREBOOT_VAR, path, sizeof path);
	char *sb_data = NULL;
	size_t sb_len = 0;
	if (fg_read_file(path, 64, &sb_data, &sb_len, NULL, 0) == 0) {
		if (sb_len >= 5)
			f->secure_boot = sb_data[4] == 1;
		free(sb_data);
	} else {
		path_of(root, "/sys/firmware/efi", path, sizeof path);
		if (stat(path, &sb) == 0)
			f->secure_boot = 0;
	}
	path_of(root, "/sys/class/tpm/tpm0", path, sizeof path);
	f->tpm_present = stat(path, &sb) == 0;
	if (!f->tpm_present) {
		path_of(root, "/dev/tpmrm0", path, sizeof path);
		f->tpm_present = stat(path, &sb) == 0;
	}
}

void facts_to_proto(const struct agent_facts *f, Fleetgate__Facts *pf)
{
	pf->hostname = (char *)f->hostname;
	pf->machine_id = (char *)f->machine_id;
	pf->os_id = (char *)f->os_id;
	pf->os_version = (char *)f->os_version;
	pf->os_pretty_name = (char *)f->os_pretty_name;
	pf->kernel_release = (char *)f->kernel_release;
	pf->arch = (char *)f->arch;
	pf->dmi_product_uuid = (char *)f->dmi_product_uuid;
	pf->dmi_product_serial = (char *)f->dmi_product_serial;
	pf->secure_boot = f->secure_boot;
	pf->tpm_present = f->tpm_present;
	pf->agent_version = (char *)FG_VERSION;
}
