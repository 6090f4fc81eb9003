/*
 * sandbox.c: the agent's sandbox policy (see sandbox.h). The whole list is
 * here: the fixed paths in one table, the paths from the configuration in
 * sandbox_policy_build.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_landlock.h"
#include "fg_log.h"
#include "fg_util.h"
#include "sandbox.h"

#define OPT FG_LL_OPTIONAL

/* What every agent reads at run time, whatever its configuration. Paths
 * that a host may lack are optional. Nothing here is writable but
 * /dev/null, and nothing is executable. */
static const struct {
	const char *path;
	enum fg_ll_access access;
	unsigned flags;
	const char *why;
} fixed_rules[] = {
	{ "/usr", FG_LL_READ, 0, "libraries loaded at run time (NSS modules, OpenSSL), zoneinfo, os-release" },
	{ "/etc/ssl", FG_LL_READ, OPT, "OpenSSL configuration" },
	{ "/etc/localtime", FG_LL_READ, OPT, "time zone" },
	{ "/etc/resolv.conf", FG_LL_READ, OPT, "resolving the gateway's name" },
	{ "/etc/hosts", FG_LL_READ, OPT, "resolving the gateway's name" },
	{ "/etc/nsswitch.conf", FG_LL_READ, OPT, "name service" },
	{ "/etc/host.conf", FG_LL_READ, OPT, "name service" },
	{ "/etc/gai.conf", FG_LL_READ, OPT, "name service" },
	{ "/etc/passwd", FG_LL_READ, OPT, "slot owner names, read again on SIGHUP" },
	{ "/etc/group", FG_LL_READ, OPT, "slot owner names, read again on SIGHUP" },
	{ "/etc/machine-id", FG_LL_READ, OPT, "facts: machine id" },
	{ "/etc/os-release", FG_LL_READ, OPT, "facts: operating system" },
	{ "/proc/sys/kernel", FG_LL_READ, OPT, "facts: hostname, kernel release" },
	{ "/proc/self", FG_LL_READ, 0, "the process's own status and maps (libc, sanitizers)" },
	{ "/sys/class/dmi/id", FG_LL_READ, OPT, "facts: DMI product uuid and serial" },
	{ "/sys/firmware/efi", FG_LL_READ, OPT, "facts: secure boot (efivars)" },
	{ "/sys/devices/system/cpu", FG_LL_READ, OPT, "CPU count (libc, ZeroMQ)" },
	{ "/dev/null", FG_LL_RW_FILE, OPT, "/dev/null" },
	{ "/dev/urandom", FG_LL_READ, OPT, "randomness where getrandom(2) is missing" },
};

static int add_rule(struct sandbox_policy *p, const char *path, enum fg_ll_access acc, unsigned flags,
		    const char *why, char *err, size_t errlen)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->rules[i].access == (int)acc && strcmp(p->rules[i].path, path) == 0)
			return 0;
	struct sandbox_rule *nr = realloc(p->rules, (p->n + 1) * sizeof *nr);
	if (nr == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	p->rules = nr;
	struct sandbox_rule *r = &nr[p->n];
	if (fg_strlcpy(r->path, path, sizeof r->path) >= sizeof r->path) {
		fg_seterr(err, errlen, "sandbox: path too long: %s", path);
		return -1;
	}
	r->access = (int)acc;
	r->flags = flags;
	r->why = why;
	p->n++;
	return 0;
}

/* The directory of file path, read-write. */
static int add_dir_of(struct sandbox_policy *p, const char *path, const char *why, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	if (path[0] == '\0')
		return 0;
	fg_strlcpy(tmp, path, sizeof tmp);
	return add_rule(p, dirname(tmp), FG_LL_RW_DIR, 0, why, err, errlen);
}

/* The configuration's directory, read-only: a rule on the file itself
 * would bind its inode, and an editor's save (or sed -i) replaces the file
 * with a new one, which SIGHUP could then not read. */
static int add_read_dir_of(struct sandbox_policy *p, const char *path, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	fg_strlcpy(tmp, path, sizeof tmp);
	return add_rule(p, dirname(tmp), FG_LL_READ, 0, "the configuration's directory, read again on SIGHUP",
			err, errlen);
}

static int add_port(uint16_t *v, size_t *n, int port)
{
	for (size_t i = 0; i < *n; i++)
		if (v[i] == port)
			return 0;
	if (*n >= SANDBOX_MAX_PORTS)
		return -1;
	v[(*n)++] = (uint16_t)port;
	return 0;
}

/* The TCP port of a ZeroMQ endpoint "tcp://HOST:PORT" (and whether HOST
 * is a name, which needs DNS, perhaps over TCP). 0 when the endpoint is
 * not TCP, -1 when malformed. */
static int endpoint_port(const char *ep, int *port, int *is_name)
{
	char host[256];
	*port = 0;
	*is_name = 0;
	if (strncmp(ep, "tcp://", 6) != 0)
		return 0;
	ep += 6;
	const char *semi = strchr(ep, ';');   /* "tcp://source;host:port" */
	if (semi)
		ep = semi + 1;
	if (agent_listen_split(ep, host, sizeof host, port) != 0)
		return -1;
	unsigned char buf[16];
	*is_name = inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1;
	return 0;
}

int sandbox_policy_build(const struct agent_config *cfg, const struct fg_bundle *b,
			 struct sandbox_policy *p, char *err, size_t errlen)
{
	memset(p, 0, sizeof *p);
	for (size_t i = 0; i < sizeof fixed_rules / sizeof fixed_rules[0]; i++)
		if (add_rule(p, fixed_rules[i].path, fixed_rules[i].access, fixed_rules[i].flags,
			     fixed_rules[i].why, err, errlen) != 0)
			goto fail;
	const char *facts_root = getenv("FLEETGATE_FACTS_ROOT");
	if ((facts_root && facts_root[0] &&
	     add_rule(p, facts_root, FG_LL_READ, OPT, "facts under FLEETGATE_FACTS_ROOT", err, errlen) != 0) ||
	    add_read_dir_of(p, cfg->path, err, errlen) != 0 ||
	    add_rule(p, cfg->state_dir, FG_LL_RW_DIR, 0, "state: CURVE key, requests in flight", err, errlen) != 0 ||
	    add_dir_of(p, cfg->bundle, "the bundle, rewritten atomically when the gateway updates the trust anchors",
		       err, errlen) != 0)
		goto fail;
	for (size_t i = 0; i < cfg->nslots; i++) {
		const struct agent_slot *s = &cfg->slots[i];
		if (add_dir_of(p, s->key, "a slot's key (atomic install)", err, errlen) != 0 ||
		    add_dir_of(p, s->cert, "a slot's certificate (atomic install)", err, errlen) != 0 ||
		    add_dir_of(p, s->chain, "a slot's chain (atomic install)", err, errlen) != 0)
			goto fail;
	}
	if (cfg->acme_webroot[0] &&
	    add_rule(p, cfg->acme_webroot, FG_LL_RW_DIR, 0, "ACME http-01 files", err, errlen) != 0)
		goto fail;

	int port = 0, is_name = 0;
	if (endpoint_port(b->endpoint, &port, &is_name) != 0) {
		fg_seterr(err, errlen, "sandbox: cannot tell the TCP port of the gateway endpoint '%s'", b->endpoint);
		goto fail;
	}
	if ((port > 0 && add_port(p->connect, &p->nconnect, port) != 0) ||
	    (is_name && add_port(p->connect, &p->nconnect, 53) != 0))
		goto ports;
	if (cfg->acme_http01_listen[0]) {
		char host[256];
		if (agent_listen_split(cfg->acme_http01_listen, host, sizeof host, &port) != 0 ||
		    add_port(p->bind, &p->nbind, port) != 0)
			goto ports;
	}

	/* A configuration in a directory the agent may write is not really
	 * read-only: note it (sandbox_apply's caller logs it). */
	char cdir[PATH_MAX];
	fg_strlcpy(cdir, cfg->path, sizeof cdir);
	dirname(cdir);
	for (size_t i = 0; i < p->n; i++) {
		size_t l = strlen(p->rules[i].path);
		if (p->rules[i].access == FG_LL_RW_DIR && strncmp(cdir, p->rules[i].path, l) == 0 &&
		    (cdir[l] == '\0' || cdir[l] == '/' || l == 1)) {
			fg_strlcpy(p->config_dir_writable, p->rules[i].path, sizeof p->config_dir_writable);
			break;
		}
	}
	return 0;
ports:
	fg_seterr(err, errlen, "sandbox: too many TCP ports");
fail:
	sandbox_policy_clear(p);
	return -1;
}

void sandbox_policy_clear(struct sandbox_policy *p)
{
	if (p == NULL)
		return;
	free(p->rules);
	memset(p, 0, sizeof *p);
}

/* Does rule h allow what rule w asks for? */
static int rule_covers(const struct sandbox_rule *h, const struct sandbox_rule *w)
{
	size_t l = strlen(h->path);
	int beneath = strcmp(h->path, w->path) == 0 ||
		      (strncmp(h->path, w->path, l) == 0 && (w->path[l] == '/' || (l == 1 && h->path[0] == '/')));
	if (!beneath)
		return 0;
	switch (w->access) {
	case FG_LL_READ:
		return 1;
	case FG_LL_RW_FILE:
		return h->access == FG_LL_RW_FILE || h->access == FG_LL_RW_DIR;
	default:
		return h->access == w->access;
	}
}

static int port_in(const uint16_t *v, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == port)
			return 1;
	return 0;
}

int sandbox_policy_covers(const struct sandbox_policy *have, const struct sandbox_policy *want,
			  char *why, size_t whylen)
{
	static const char *const names[FG_LL_ACCESS_MAX] = {
		[FG_LL_READ] = "read", [FG_LL_RW_FILE] = "write", [FG_LL_RW_DIR] = "write", [FG_LL_EXEC] = "execute",
	};
	for (size_t i = 0; i < want->n; i++) {
		size_t j;
		for (j = 0; j < have->n && !rule_covers(&have->rules[j], &want->rules[i]); j++)
			;
		if (j == have->n) {
			fg_seterr(why, whylen, "the sandbox applied at start does not let the agent %s %s",
				  names[want->rules[i].access], want->rules[i].path);
			return 0;
		}
	}
	for (size_t i = 0; i < want->nconnect; i++)
		if (!port_in(have->connect, have->nconnect, want->connect[i])) {
			fg_seterr(why, whylen, "the sandbox applied at start does not let the agent connect to TCP port %u",
				  (unsigned)want->connect[i]);
			return 0;
		}
	for (size_t i = 0; i < want->nbind; i++)
		if (!port_in(have->bind, have->nbind, want->bind[i])) {
			fg_seterr(why, whylen, "the sandbox applied at start does not let the agent bind TCP port %u",
				  (unsigned)want->bind[i]);
			return 0;
		}
	return 1;
}

int sandbox_apply(const struct sandbox_policy *p, int mode, char *desc, size_t desclen, char *err,
		  size_t errlen)
{
	struct fg_landlock *ll = fg_landlock_new();
	int rc = -1;
	if (ll == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < p->n; i++) {
		fg_debug("agent", NULL, "sandbox: %s %s%s (%s)",
			 p->rules[i].access == FG_LL_RW_DIR ? "read-write" : p->rules[i].access == FG_LL_RW_FILE ? "read-write file" : "read-only",
			 p->rules[i].path, (p->rules[i].flags & OPT) ? " if present" : "", p->rules[i].why);
		if (fg_landlock_add_path(ll, p->rules[i].path, (enum fg_ll_access)p->rules[i].access,
					 p->rules[i].flags) != 0) {
			fg_seterr(err, errlen, "sandbox: out of memory");
			goto out;
		}
	}
	fg_landlock_restrict_tcp(ll);
	for (size_t i = 0; i < p->nconnect; i++)
		if (fg_landlock_allow_connect(ll, p->connect[i]) != 0)
			goto oom;
	for (size_t i = 0; i < p->nbind; i++)
		if (fg_landlock_allow_bind(ll, p->bind[i]) != 0)
			goto oom;
	fg_landlock_scope(ll, FG_LL_SCOPE_SIGNAL | FG_LL_SCOPE_ABSTRACT_UNIX);
	if (fg_landlock_apply(ll, (enum fg_sandbox_mode)mode, err, errlen) != 0)
		goto out;
	fg_strlcpy(desc, fg_landlock_describe(ll), desclen);
	rc = 0;
	goto out;
oom:
	fg_seterr(err, errlen, "sandbox: out of memory");
out:
	fg_landlock_free(ll);
	return rc;
}
