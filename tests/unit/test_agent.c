/*
 * Unit tests for the agent: config parsing and its errors, facts from a
 * fake kernel tree, renewal timing, and the atomic install with reload
 * hook and rollback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/x509v3.h>

#include "agent_config.h"
#include "facts.h"
#include "fg_util.h"
#include "fg_x509.h"
#include "slot.h"

static char dir[64];

static void writef_n(const char *rel, const char *text, size_t len)
{
	char path[512], err[256], d[512];
	snprintf(path, sizeof path, "%s/%s", dir, rel);
	snprintf(d, sizeof d, "%s", path);
	*strrchr(d, '/') = '\0';
	assert_int_equal(fg_mkdirs(d, 0755, err, sizeof err), 0);
	assert_int_equal(fg_write_file_atomic(path, text, len, 0644, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
}

static void writef(const char *rel, const char *text)
{
	writef_n(rel, text, strlen(text));
}

static int setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/fg-agent.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int load(const char *text, struct agent_config *cfg, char *err, size_t errlen)
{
	char path[256];
	writef("agent.conf", text);
	snprintf(path, sizeof path, "%s/agent.conf", dir);
	return agent_config_load(path, cfg, err, errlen);
}

static void test_config(void **state)
{
	struct agent_config cfg;
	char err[512];
	(void)state;
	assert_int_equal(load("# comment\nbundle = b.bundle\nstate_dir = st\ncheckin_interval = 30m\n"
			      "[slot web]\nkey_type = p384\nkey = web.key\ncert = /etc/x/web.crt\nmode = 0640\n"
			      "reload = systemctl reload nginx # not a comment\nrenew_at = 0.5\n"
			      "[slot vpn]\nkey = vpn.key\ncert = vpn.crt\n",
			      &cfg, err, sizeof err), 0);
	assert_int_equal(cfg.nslots, 2);
	assert_int_equal(cfg.checkin_interval, 1800);
	assert_int_equal(cfg.slots[0].key_type, FG_KEY_P384);
	assert_int_equal(cfg.slots[0].mode, 0640);
	assert_string_equal(cfg.slots[0].cert, "/etc/x/web.crt");
	char want[256];
	snprintf(want, sizeof want, "%s/web.key", dir);
	assert_string_equal(cfg.slots[0].key, want);
	assert_string_equal(cfg.slots[0].reload, "systemctl reload nginx # not a comment");
	assert_true(cfg.slots[0].renew_at == 0.5);
	assert_int_equal(cfg.slots[1].key_type, FG_KEY_P256);
	assert_true(cfg.slots[1].renew_at > 0.66 && cfg.slots[1].renew_at < 0.67);
	agent_config_clear(&cfg);

	static const struct { const char *text, *msg; } bad[] = {
		{ "bundle = b\nstate_dir = s\n[slot a]\nkee = k\ncert = c\n", "agent.conf:4: unknown key 'kee' in [slot a]" },
		{ "bundle = b\nstate_dir = s\n", "no [slot NAME]" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\n[slot a]\nkey = k2\ncert = c2\n", "defined twice" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\n[slot b]\nkey = k\ncert = c2\n", "share a key" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey_type = dsa\nkey = k\ncert = c\n", "agent.conf:4: key_type 'dsa'" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nmode = 0644\nkey = k\ncert = c\n", "world-readable" },
		{ "bundle = b\nstate_dir = s\n[slot bad name]\nkey = k\ncert = c\n", "slot name" },
		{ "bundle = b\nstate_dir = s\ncheckin_interval = soon\n[slot a]\nkey = k\ncert = c\n", "not a duration" },
		{ "state_dir = s\n[slot a]\nkey = k\ncert = c\n", "'bundle' and 'state_dir' are required" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey = k\n", "needs 'key' and 'cert'" },
		{ "bundle = b\nstate_dir = s\njunk line\n", "agent.conf:3: expected 'key = value'" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		assert_int_equal(load(bad[i].text, &cfg, err, sizeof err), -1);
		if (strstr(err, bad[i].msg) == NULL)
			fail_msg("case %zu: '%s' does not contain '%s'", i, err, bad[i].msg);
	}
}

static void test_facts(void **state)
{
	struct agent_facts f;
	char root[128];
	(void)state;
	snprintf(root, sizeof root, "%s/root", dir);
	char p[256];
	snprintf(p, sizeof p, "root/etc/os-release");
	writef(p, "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n");
	writef("root/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
	writef("root/proc/sys/kernel/hostname", "Laptop-17\n");
	writef("root/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
	writef("root/sys/class/dmi/id/product_serial", "SN-4242\n");
	writef_n("root/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", "\x06\x00\x00\x00\x01", 5);
	facts_read(root, &f);
	assert_string_equal(f.hostname, "Laptop-17");
	assert_string_equal(f.os_id, "debian");
	assert_string_equal(f.os_version, "12");
	assert_string_equal(f.os_pretty_name, "Debian GNU/Linux 12 (bookworm)");
	assert_string_equal(f.machine_id, "0123456789abcdef0123456789abcdef");
	assert_string_equal(f.kernel_release, "6.1.0-28-amd64");
	assert_string_equal(f.dmi_product_serial, "SN-4242");
	assert_string_equal(f.dmi_product_uuid, "");
	assert_int_equal(f.secure_boot, 1);
	assert_int_equal(f.tpm_present, 0);
	writef_n("root/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", "\x06\x00\x00\x00\x00", 5);
	facts_read(root, &f);
	assert_int_equal(f.secure_boot, 0);
	writef("root/sys/class/tpm/tpm0/x", "");
	facts_read(root, &f);
	assert_int_equal(f.tpm_present, 1);
}

/* A CA and a leaf for key, valid [now + from, now + to]. */
static X509 *issue(EVP_PKEY *cak, X509 *ca, EVP_PKEY *key, long from, long to, long serial)
{
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)(ca ? "leaf" : "ca"), -1, -1, 0);
	X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), from);
	X509_gmtime_adj(X509_getm_notAfter(x), to);
	X509_set_pubkey(x, key);
	if (!ca) {
		X509V3_CTX ctx;
		X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	X509_sign(x, cak, EVP_sha256());
	return x;
}

static void test_renew_due(void **state)
{
	char err[256];
	struct agent_slot s;
	(void)state;
	memset(&s, 0, sizeof s);
	s.renew_at = 2.0 / 3.0;
	EVP_PKEY *k = fg_key_generate(FG_KEY_P256, err, sizeof err);
	int64_t now = fg_now();
	for (long serial = 1; serial < 20; serial++) {
		X509 *c = issue(k, NULL, k, 0, 90 * 86400, serial);
		int64_t due = slot_renew_due(&s, c);
		int64_t life = 90 * 86400;
		/* at 2/3 of the lifetime, minus at most 5% of it */
		assert_true(due <= now + life * 2 / 3 + 2);
		assert_true(due >= now + life * 2 / 3 - life / 20 - 2);
		assert_int_equal(due, slot_renew_due(&s, c));   /* stable */
		X509_free(c);
	}
	EVP_PKEY_free(k);
}

static char *pem_of(X509 *x)
{
	return fg_cert_to_pem(x);
}

static void test_install_and_rollback(void **state)
{
	char err[1024], path[256];
	struct agent_config cfg;
	(void)state;
	memset(&cfg, 0, sizeof cfg);
	snprintf(cfg.state_dir, sizeof cfg.state_dir, "%s/state", dir);
	assert_int_equal(fg_mkdirs(cfg.state_dir, 0700, err, sizeof err), 0);
	struct agent_slot s;
	memset(&s, 0, sizeof s);
	strcpy(s.name, "default");
	snprintf(s.key, sizeof s.key, "%s/inst/default.key", dir);
	snprintf(s.cert, sizeof s.cert, "%s/inst/default.crt", dir);
	snprintf(s.chain, sizeof s.chain, "%s/inst/chain.crt", dir);
	snprintf(path, sizeof path, "%s/inst", dir);
	fg_mkdirs(path, 0755, err, sizeof err);
	s.mode = 0600;
	s.uid = (uid_t)-1;
	s.gid = (gid_t)-1;
	s.renew_at = 0.66;

	EVP_PKEY *cak = fg_key_generate(FG_KEY_P256, err, sizeof err);
	X509 *ca = issue(cak, NULL, cak, -60, 86400, 1);
	EVP_PKEY *otherk = fg_key_generate(FG_KEY_P256, err, sizeof err);
	X509 *otherca = issue(otherk, NULL, otherk, -60, 86400, 9);
	char *anchors = pem_of(ca);

	struct slot_request r;
	memset(&r, 0, sizeof r);
	strcpy(r.rid, "rid-00000001");
	r.key = fg_key_generate(FG_KEY_P256, err, sizeof err);
	X509 *leaf = issue(cak, ca, r.key, -60, 3600, 2);
	unsigned char *leaf_der, *ca_der;
	size_t leaf_len, ca_len;
	fg_cert_to_der(leaf, &leaf_der, &leaf_len);
	fg_cert_to_der(ca, &ca_der, &ca_len);
	ProtobufCBinaryData chain[1] = { { ca_len, ca_der } };
	Fleetgate__CertReply cr = FLEETGATE__CERT_REPLY__INIT;
	cr.status = FLEETGATE__STATUS__STATUS_OK;
	cr.cert_der.data = leaf_der;
	cr.cert_der.len = leaf_len;
	cr.n_chain_der = 1;
	cr.chain_der = chain;

	snprintf(s.reload, sizeof s.reload, "echo ok >> %s/hook.log", dir);
	assert_int_equal(slot_install(&cfg, &s, &r, &cr, anchors, err, sizeof err), 0);
	struct stat sb;
	assert_int_equal(stat(s.key, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(stat(s.cert, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0644);
	X509 *inst = NULL;
	EVP_PKEY *instk = NULL;
	assert_int_equal(slot_installed(&s, &inst, &instk), 1);
	assert_int_equal(X509_cmp(inst, leaf), 0);
	X509_free(inst);
	EVP_PKEY_free(instk);
	snprintf(path, sizeof path, "%s/hook.log", dir);
	assert_int_equal(stat(path, &sb), 0);

	char *old_cert, *old_key;
	size_t ocl, okl;
	fg_read_file(s.cert, 1 << 20, &old_cert, &ocl, err, sizeof err);
	fg_read_file(s.key, 1 << 20, &old_key, &okl, err, sizeof err);

	/* a second certificate whose reload hook fails: rolled back byte for byte */
	struct slot_request r2;
	memset(&r2, 0, sizeof r2);
	strcpy(r2.rid, "rid-00000002");
	r2.key = fg_key_generate(FG_KEY_P256, err, sizeof err);
	X509 *leaf2 = issue(cak, ca, r2.key, -60, 3600, 3);
	unsigned char *leaf2_der;
	size_t leaf2_len;
	fg_cert_to_der(leaf2, &leaf2_der, &leaf2_len);
	cr.cert_der.data = leaf2_der;
	cr.cert_der.len = leaf2_len;
	strcpy(s.reload, "exit 3");
	assert_int_equal(slot_install(&cfg, &s, &r2, &cr, anchors, err, sizeof err), -1);
	assert_non_null(strstr(err, "status 3"));
	assert_non_null(strstr(err, "put back"));
	char *now_cert, *now_key;
	size_t ncl, nkl;
	fg_read_file(s.cert, 1 << 20, &now_cert, &ncl, err, sizeof err);
	fg_read_file(s.key, 1 << 20, &now_key, &nkl, err, sizeof err);
	assert_int_equal(ncl, ocl);
	assert_memory_equal(now_cert, old_cert, ocl);
	assert_int_equal(nkl, okl);
	assert_memory_equal(now_key, old_key, okl);
	free(now_cert);
	free(now_key);

	/* a certificate for another key, or from another CA, is refused; nothing changes */
	strcpy(s.reload, "");
	EVP_PKEY *saved = r2.key;
	r2.key = r.key;
	assert_int_equal(slot_install(&cfg, &s, &r2, &cr, anchors, err, sizeof err), -1);
	assert_non_null(strstr(err, "does not match"));
	r2.key = saved;
	char *other_anchor = pem_of(otherca);
	assert_int_equal(slot_install(&cfg, &s, &r2, &cr, other_anchor, err, sizeof err), -1);
	assert_non_null(strstr(err, "trust anchors"));
	fg_read_file(s.cert, 1 << 20, &now_cert, &ncl, err, sizeof err);
	assert_memory_equal(now_cert, old_cert, ocl);
	free(now_cert);

	free(other_anchor);
	free(old_cert);
	free(old_key);
	free(leaf_der);
	free(leaf2_der);
	free(ca_der);
	free(anchors);
	X509_free(leaf);
	X509_free(leaf2);
	X509_free(ca);
	X509_free(otherca);
	EVP_PKEY_free(cak);
	EVP_PKEY_free(otherk);
	EVP_PKEY_free(r.key);
	EVP_PKEY_free(r2.key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_facts),
		cmocka_unit_test(test_renew_due),
		cmocka_unit_test(test_install_and_rollback),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
