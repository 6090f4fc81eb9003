/*
 * Unit tests for the agent: config parsing and its errors, facts from a
 * fake kernel tree, renewal timing and decisions, requests kept on disk,
 * the reload hook, the atomic install with rollback, and the client's
 * handshake diagnosis against a real CURVE socket.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>
#include <openssl/x509v3.h>

#include "agent_config.h"
#include "client.h"
#include "facts.h"
#include "fg_landlock.h"
#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"
#include "hookproc.h"
#include "sandbox.h"
#include "slot.h"

static char dir[64];

static void path_in(char *out, size_t n, const char *rel)
{
	snprintf(out, n, "%s/%s", dir, rel);
}

static void writef_n(const char *rel, const char *text, size_t len)
{
	char path[512], err[256], d[512];
	path_in(path, sizeof path, rel);
	snprintf(d, sizeof d, "%s", path);
	*strrchr(d, '/') = '\0';
	assert_int_equal(fg_mkdirs(d, 0755, err, sizeof err), 0);
	assert_int_equal(fg_write_file_atomic(path, text, len, 0644, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
}

static void writef(const char *rel, const char *text)
{
	writef_n(rel, text, strlen(text));
}

/* Whole file, or NULL when missing; *len set. Caller frees. */
static char *slurp(const char *path, size_t *len)
{
	char *t = NULL;
	size_t l = 0;
	if (fg_read_file(path, 1 << 20, &t, &l, NULL, 0) != 0)
		return NULL;
	if (len)
		*len = l;
	return t;
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
	path_in(path, sizeof path, "agent.conf");
	return agent_config_load(path, cfg, err, errlen);
}

/* ---- config ---- */

static void test_config_good(void **state)
{
	struct agent_config cfg;
	char err[512], want[512];
	(void)state;
	assert_int_equal(load("# comment\nbundle = b.bundle\nstate_dir = st   # trailing comment\n"
			      "checkin_interval = 30m\nrequest_timeout = 15\nlog_level = debug\n"
			      "\n[slot web]\nkey_type = p384\nkey = web.key\ncert = /etc/x/web.crt\n"
			      "chain = web-chain.crt\nmode = 0640\nowner = 0:0\n"
			      "reload = systemctl reload nginx # sh sees this comment\nrenew_at = 0.5\n"
			      "[slot vpn.2]\n  key = vpn.key\ncert = vpn.crt\n",
			      &cfg, err, sizeof err), 0);
	assert_int_equal(cfg.nslots, 2);
	assert_int_equal(cfg.checkin_interval, 1800);
	assert_int_equal(cfg.request_timeout, 15);
	assert_string_equal(cfg.log_level, "debug");
	path_in(want, sizeof want, "st");
	assert_string_equal(cfg.state_dir, want);
	path_in(want, sizeof want, "b.bundle");
	assert_string_equal(cfg.bundle, want);
	const struct agent_slot *w = agent_config_slot(&cfg, "web");
	assert_non_null(w);
	assert_int_equal(w->key_type, FG_KEY_P384);
	assert_int_equal(w->mode, 0640);
	assert_int_equal(w->uid, 0);
	assert_int_equal(w->gid, 0);
	assert_string_equal(w->cert, "/etc/x/web.crt");
	path_in(want, sizeof want, "web.key");
	assert_string_equal(w->key, want);
	path_in(want, sizeof want, "web-chain.crt");
	assert_string_equal(w->chain, want);
	assert_string_equal(w->reload, "systemctl reload nginx # sh sees this comment");
	assert_true(w->renew_at == 0.5);
	assert_int_equal(w->line, 8);
	const struct agent_slot *v = agent_config_slot(&cfg, "vpn.2");
	assert_non_null(v);
	assert_int_equal(v->key_type, FG_KEY_P256);
	assert_int_equal(v->mode, 0600);
	assert_int_equal(v->uid, (uid_t)-1);
	assert_string_equal(v->chain, "");
	assert_string_equal(v->reload, "");
	assert_true(v->renew_at > 0.66 && v->renew_at < 0.67);
	assert_null(agent_config_slot(&cfg, "nope"));
	agent_config_clear(&cfg);

	/* defaults */
	assert_int_equal(load("bundle = /b\nstate_dir = /s\n[slot a]\nkey = /k\ncert = /c\n", &cfg, err, sizeof err), 0);
	assert_int_equal(cfg.checkin_interval, 3600);
	assert_int_equal(cfg.request_timeout, 10);
	assert_string_equal(cfg.log_level, "info");
	agent_config_clear(&cfg);
}

static void test_config_errors(void **state)
{
	struct agent_config cfg;
	char err[512];
	(void)state;
	static const struct { const char *text, *msg; } bad[] = {
		{ "bundle = b\nstate_dir = s\n[slot a]\nkee = k\ncert = c\n", "agent.conf:4: unknown key 'kee' in [slot a]" },
		{ "bundle = b\nstate_dir = s\nbundel = x\n", "agent.conf:3: unknown key 'bundel'" },
		{ "bundle = b\nstate_dir = s\n", "agent.conf: no [slot NAME]" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\n[slot a]\nkey = k2\ncert = c2\n",
		  "agent.conf:6: slot 'a' is defined twice (first at line 3)" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\n[slot b]\nkey = k\ncert = c2\n",
		  "agent.conf:6: slots 'a' and 'b' share a key or certificate path" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\nchain = ch\n[slot b]\nkey = k2\ncert = ch\n",
		  "agent.conf:7: slots 'a' and 'b' share" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = k\n", "agent.conf:3: [slot a] key, cert and chain must be different" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey_type = dsa\nkey = k\ncert = c\n", "agent.conf:4: key_type 'dsa' is unknown" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey = k\nmode = 0644\ncert = c\n", "agent.conf:5: mode '0644'" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nmode = 9\nkey = k\ncert = c\n", "agent.conf:4: mode '9'" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nowner = no-such-user-xyz\nkey = k\ncert = c\n",
		  "agent.conf:4: owner 'no-such-user-xyz': no user" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nowner = root:no-such-group-xyz\nkey = k\ncert = c\n",
		  "agent.conf:4: owner 'root:no-such-group-xyz': no group" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nrenew_at = 1.5\nkey = k\ncert = c\n", "agent.conf:4: renew_at '1.5'" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nrenew_at = 0.5x\nkey = k\ncert = c\n", "agent.conf:4: renew_at" },
		{ "bundle = b\nstate_dir = s\n[slot bad name]\nkey = k\ncert = c\n", "agent.conf:3: slot name 'bad name' is invalid" },
		{ "bundle = b\nstate_dir = s\n[slot ]\nkey = k\ncert = c\n", "agent.conf:3: slot name '' is invalid" },
		{ "bundle = b\nstate_dir = s\n[web]\n", "agent.conf:3: expected a section like [slot NAME]" },
		{ "bundle = b\nstate_dir = s\n[slot a\n", "agent.conf:3: expected a section" },
		{ "bundle = b\nstate_dir = s\ncheckin_interval = soon\n[slot a]\nkey = k\ncert = c\n", "agent.conf:3: checkin_interval 'soon' is not a duration" },
		{ "bundle = b\nstate_dir = s\nrequest_timeout = 0\n[slot a]\nkey = k\ncert = c\n", "agent.conf:3: request_timeout '0'" },
		{ "bundle = b\nstate_dir = s\nlog_level = loud\n[slot a]\nkey = k\ncert = c\n", "agent.conf:3: log_level 'loud' is unknown" },
		{ "state_dir = s\n[slot a]\nkey = k\ncert = c\n", "'bundle' and 'state_dir' are required" },
		{ "bundle = b\nstate_dir = s\n\n[slot a]\nkey = k\n", "agent.conf:4: [slot a] needs 'key' and 'cert'" },
		{ "bundle = b\nstate_dir = s\njunk line\n", "agent.conf:3: expected 'key = value'" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey =\n", "agent.conf:4: 'key' has no value" },
		{ "bundle = b\nstate_dir = s\n[slot a]\nkey = k\nkey = k2\ncert = c\n", "agent.conf:5: 'key' is set twice in [slot a]" },
		{ "bundle = b\nbundle = b2\nstate_dir = s\n", "agent.conf:2: 'bundle' is set twice" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		if (load(bad[i].text, &cfg, err, sizeof err) != -1)
			fail_msg("case %zu was accepted", i);
		if (strstr(err, bad[i].msg) == NULL)
			fail_msg("case %zu: '%s' does not contain '%s'", i, err, bad[i].msg);
		assert_null(cfg.slots);
	}

	/* more slots than the agent tracks */
	char *big = malloc(64 * 1024), *p = big;
	p += sprintf(p, "bundle = b\nstate_dir = s\n");
	for (int i = 0; i <= AGENT_MAX_SLOTS; i++)
		p += sprintf(p, "[slot s%d]\nkey = k%d\ncert = c%d\n", i, i, i);
	assert_int_equal(load(big, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "too many slots"));
	free(big);

	/* a missing file says which */
	assert_int_equal(agent_config_load("/nonexistent/agent.conf", &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "/nonexistent/agent.conf"));
}

/* The shipped example parses as documented. */
static void test_config_example(void **state)
{
	struct agent_config cfg;
	char err[512], path[PATH_MAX];
	const char *src = getenv("FG_SOURCE_ROOT");
	(void)state;
	snprintf(path, sizeof path, "%s/agents/fleetgate-agent.conf.example", src ? src : "..");
	if (access(path, R_OK) != 0)
		skip();
	if (agent_config_load(path, &cfg, err, sizeof err) != 0)
		fail_msg("%s", err);
	assert_string_equal(cfg.bundle, "/etc/fleetgate/bootstrap.bundle");
	assert_string_equal(cfg.state_dir, "/var/lib/fleetgate-agent");
	assert_int_equal(cfg.checkin_interval, 3600);
	assert_int_equal(cfg.request_timeout, 10);
	assert_int_equal(cfg.nslots, 1);
	assert_string_equal(cfg.slots[0].name, "default");
	assert_string_equal(cfg.slots[0].chain, "/etc/fleetgate/default-chain.crt");
	assert_true(cfg.slots[0].renew_at == 0.66);
	agent_config_clear(&cfg);
}

/* acme_http01_listen and acme_webroot: parsed, checked, quotes allowed. */
static void test_config_acme(void **state)
{
	struct agent_config cfg;
	char err[512], host[64];
	int port = 0;
	(void)state;
	assert_int_equal(load("bundle = b\nstate_dir = s\nacme_http01_listen = \"127.0.0.2:5002\"\n"
			      "acme_webroot = www\n[slot a]\nkey = k\ncert = c\n", &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.acme_http01_listen, "127.0.0.2:5002");
	assert_non_null(strstr(cfg.acme_webroot, "/www"));
	assert_true(cfg.acme_webroot[0] == '/');
	agent_config_clear(&cfg);
	assert_int_equal(load("bundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\n", &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.acme_http01_listen, "");
	assert_string_equal(cfg.acme_webroot, "");
	agent_config_clear(&cfg);
	assert_int_equal(load("bundle = b\nstate_dir = s\nacme_http01_listen = 127.0.0.2\n[slot a]\nkey = k\ncert = c\n",
			      &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "agent.conf:3: acme_http01_listen '127.0.0.2' is not HOST:PORT"));
	assert_int_equal(load("bundle = b\nstate_dir = s\nacme_http01_listen = 0.0.0.0:70000\n[slot a]\nkey = k\ncert = c\n",
			      &cfg, err, sizeof err), -1);
	assert_int_equal(agent_listen_split("[::]:80", host, sizeof host, &port), 0);
	assert_string_equal(host, "::");
	assert_int_equal(port, 80);
	assert_int_equal(agent_listen_split("0.0.0.0:8080", host, sizeof host, &port), 0);
	assert_string_equal(host, "0.0.0.0");
	assert_int_equal(port, 8080);
	assert_int_equal(agent_listen_split(":80", host, sizeof host, &port), -1);
	assert_int_equal(agent_listen_split("[::1:80", host, sizeof host, &port), -1);
	assert_int_equal(agent_listen_split("host:", host, sizeof host, &port), -1);
}

/* ---- facts ---- */

#define SB_VAR "root/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

static void test_facts(void **state)
{
	struct agent_facts f;
	char root[128];
	(void)state;
	path_in(root, sizeof root, "root");
	writef("root/etc/os-release", "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\n"
				      "PRETTY_NAME='Debian GNU/Linux 12 (bookworm)'\nID_LIKE=x\n");
	writef("root/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
	writef("root/proc/sys/kernel/hostname", "Laptop-17\n");
	writef("root/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
	writef("root/sys/class/dmi/id/product_serial", "SN-4242\n");
	/* no product_uuid (root-only on real systems); no EFI at all yet */
	facts_read(root, &f);
	assert_string_equal(f.hostname, "Laptop-17");
	assert_string_equal(f.os_id, "debian");
	assert_string_equal(f.os_version, "12");
	assert_string_equal(f.os_pretty_name, "Debian GNU/Linux 12 (bookworm)");
	assert_string_equal(f.machine_id, "0123456789abcdef0123456789abcdef");
	assert_string_equal(f.kernel_release, "6.1.0-28-amd64");
	assert_string_equal(f.dmi_product_serial, "SN-4242");
	assert_string_equal(f.dmi_product_uuid, "");
	assert_int_equal(f.secure_boot, -1);
	assert_int_equal(f.tpm_present, 0);

	/* EFI without the variable: disabled */
	writef("root/sys/firmware/efi/fw_platform_size", "64\n");
	facts_read(root, &f);
	assert_int_equal(f.secure_boot, 0);
	writef_n(SB_VAR, "\x06\x00\x00\x00\x01", 5);
	facts_read(root, &f);
	assert_int_equal(f.secure_boot, 1);
	writef_n(SB_VAR, "\x06\x00\x00\x00\x00", 5);
	facts_read(root, &f);
	assert_int_equal(f.secure_boot, 0);
	writef("root/dev/tpmrm0", "");
	facts_read(root, &f);
	assert_int_equal(f.tpm_present, 1);

	/* the environment variable is the default root */
	setenv("FLEETGATE_FACTS_ROOT", root, 1);
	facts_read(NULL, &f);
	unsetenv("FLEETGATE_FACTS_ROOT");
	assert_string_equal(f.hostname, "Laptop-17");

	Fleetgate__Facts pf = FLEETGATE__FACTS__INIT;
	facts_to_proto(&f, &pf);
	assert_string_equal(pf.os_id, "debian");
	assert_int_equal(pf.secure_boot, 0);
	assert_true(pf.tpm_present);
	assert_string_equal(pf.agent_version, FG_VERSION);
}

/* ---- a tiny CA ---- */

/* A certificate for key signed by cak (self-signed CA when ca is NULL),
 * valid [now + from, now + to]. */
static X509 *issue(EVP_PKEY *cak, X509 *ca, EVP_PKEY *key, long from, long to, long serial)
{
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)(ca ? "leaf" : "test ca"), -1, -1, 0);
	X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), from);
	X509_gmtime_adj(X509_getm_notAfter(x), to);
	X509_set_pubkey(x, key);
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, ca ? ca : x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
						ca ? "critical,CA:FALSE" : "critical,CA:TRUE");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	X509_sign(x, cak, EVP_sha256());
	return x;
}

static void write_pem(const char *path, X509 *x)
{
	char *pem = fg_cert_to_pem(x), err[256];
	assert_int_equal(fg_write_file_atomic(path, pem, strlen(pem), 0644, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
	free(pem);
}

/* A slot installing under dir/<name>/ and a config with dir/state. */
static void make_slot(struct agent_config *cfg, struct agent_slot *s, const char *name)
{
	char err[256], d[256];
	memset(cfg, 0, sizeof *cfg);
	path_in(cfg->state_dir, sizeof cfg->state_dir, "state");
	assert_int_equal(fg_mkdirs(cfg->state_dir, 0700, err, sizeof err), 0);
	memset(s, 0, sizeof *s);
	fg_strlcpy(s->name, name, sizeof s->name);
	path_in(d, sizeof d, name);
	assert_int_equal(fg_mkdirs(d, 0755, err, sizeof err), 0);
	snprintf(s->key, sizeof s->key, "%s/%s.key", d, name);
	snprintf(s->cert, sizeof s->cert, "%s/%s.crt", d, name);
	snprintf(s->chain, sizeof s->chain, "%s/%s-chain.crt", d, name);
	s->key_type = FG_KEY_P256;
	s->mode = 0600;
	s->uid = (uid_t)-1;
	s->gid = (gid_t)-1;
	s->renew_at = 2.0 / 3.0;
}

/* ---- renewal timing ---- */

static void test_renew_due(void **state)
{
	char err[256];
	struct agent_slot s;
	(void)state;
	memset(&s, 0, sizeof s);
	s.renew_at = 2.0 / 3.0;
	EVP_PKEY *k = fg_key_generate(FG_KEY_P256, err, sizeof err);
	assert_non_null(k);
	int64_t now = fg_now(), life = 90 * 86400, lo = INT64_MAX, hi = 0;
	for (long serial = 1; serial < 40; serial++) {
		X509 *c = issue(k, NULL, k, 0, life, serial);
		int64_t due = slot_renew_due(&s, c);
		/* at 2/3 of the lifetime, minus at most 5% of it */
		assert_true(due <= now + life * 2 / 3 + 2);
		assert_true(due >= now + life * 2 / 3 - life / 20 - 2);
		assert_int_equal(due, slot_renew_due(&s, c));   /* stable for one certificate */
		lo = due < lo ? due : lo;
		hi = due > hi ? due : hi;
		X509_free(c);
	}
	/* the jitter really spreads: 39 serials span more than 1% of the lifetime */
	assert_true(hi - lo > life / 100);

	/* never later than the margin before expiry */
	s.renew_at = 0.95;
	X509 *c = issue(k, NULL, k, 0, 10 * 3600, 7);
	assert_true(slot_renew_due(&s, c) <= now + 9 * 3600 + 2);
	X509_free(c);
	c = issue(k, NULL, k, 0, 600, 8);          /* short-lived: a tenth of the lifetime */
	assert_true(slot_renew_due(&s, c) <= now + 540 + 2);
	X509_free(c);
	EVP_PKEY_free(k);
}

static void test_decide(void **state)
{
	char err[256], p[PATH_MAX + 32];
	struct agent_config cfg;
	struct agent_slot s;
	int64_t due, na, now = fg_now(), day = 86400;
	(void)state;
	make_slot(&cfg, &s, "decide");
	EVP_PKEY *k = fg_key_generate(FG_KEY_P256, err, sizeof err);
	EVP_PKEY *other = fg_key_generate(FG_KEY_P256, err, sizeof err);
	assert_int_equal(fg_key_save(s.key, k, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);

	/* nothing installed */
	assert_int_equal(slot_decide(&cfg, &s, now, 0, &due, &na), SLOT_ENROLL);
	assert_int_equal(due, 0);

	/* fresh 90-day certificate: valid; forced: renew */
	X509 *c = issue(k, NULL, k, 0, 90 * day, 11);
	write_pem(s.cert, c);
	X509_free(c);
	assert_int_equal(slot_decide(&cfg, &s, now, 0, &due, &na), SLOT_VALID);
	assert_true(na >= now + 90 * day - 2 && na <= now + 90 * day + 2);
	assert_true(due > now + 50 * day && due < now + 61 * day);
	assert_int_equal(slot_decide(&cfg, &s, now, 1, NULL, NULL), SLOT_RENEW);
	/* the same certificate seen from just before and after its due time */
	assert_int_equal(slot_decide(&cfg, &s, due - 1, 0, NULL, NULL), SLOT_VALID);
	assert_int_equal(slot_decide(&cfg, &s, due, 0, NULL, NULL), SLOT_RENEW);

	/* the CA's suggested renewal time (ARI) for this serial replaces the
	 * own schedule; for another serial, or outside the life, it is ignored */
	{
		struct fg_cert_info ci;
		char line[128];
		int64_t own = due, d2;
		X509 *cur = NULL;
		assert_int_equal(slot_installed(&s, &cur, NULL), 1);
		assert_int_equal(fg_cert_info(cur, &ci, NULL, 0), 0);
		X509_free(cur);
		snprintf(p, sizeof p, "%s/decide.renew_after", cfg.state_dir);
		int n = snprintf(line, sizeof line, "%s %lld\n", ci.serial_hex, (long long)(now + 10 * day));
		assert_int_equal(fg_write_file_atomic(p, line, (size_t)n, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
		assert_int_equal(slot_decide(&cfg, &s, now, 0, &d2, NULL), SLOT_VALID);
		assert_int_equal(d2, now + 10 * day);
		assert_int_equal(slot_decide(&cfg, &s, now + 10 * day, 0, NULL, NULL), SLOT_RENEW);
		/* later than the margin before expiry: held to the margin */
		n = snprintf(line, sizeof line, "%s %lld\n", ci.serial_hex, (long long)(ci.not_after - 60));
		assert_int_equal(fg_write_file_atomic(p, line, (size_t)n, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
		assert_int_equal(slot_decide(&cfg, &s, now, 0, &d2, NULL), SLOT_VALID);
		assert_int_equal(d2, ci.not_after - 3600);
		/* another certificate's suggestion */
		n = snprintf(line, sizeof line, "DEADBEEF %lld\n", (long long)(now + day));
		assert_int_equal(fg_write_file_atomic(p, line, (size_t)n, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
		assert_int_equal(slot_decide(&cfg, &s, now, 0, &d2, NULL), SLOT_VALID);
		assert_int_equal(d2, own);
		/* after the certificate's end */
		n = snprintf(line, sizeof line, "%s %lld\n", ci.serial_hex, (long long)(ci.not_after + day));
		assert_int_equal(fg_write_file_atomic(p, line, (size_t)n, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
		assert_int_equal(slot_decide(&cfg, &s, now, 0, &d2, NULL), SLOT_VALID);
		assert_int_equal(d2, own);
		unlink(p);
	}

	/* past 2/3 of the lifetime (70 of 90 days gone): renew */
	c = issue(k, NULL, k, -70 * day, 20 * day, 12);
	write_pem(s.cert, c);
	X509_free(c);
	assert_int_equal(slot_decide(&cfg, &s, now, 0, NULL, NULL), SLOT_RENEW);

	/* expired: enroll again */
	c = issue(k, NULL, k, -90 * day, -day, 13);
	write_pem(s.cert, c);
	X509_free(c);
	assert_int_equal(slot_decide(&cfg, &s, now, 0, NULL, NULL), SLOT_ENROLL);

	/* a certificate for another key is not installed */
	c = issue(other, NULL, other, 0, 90 * day, 14);
	write_pem(s.cert, c);
	X509_free(c);
	assert_int_equal(slot_installed(&s, NULL, NULL), 0);
	assert_int_equal(slot_decide(&cfg, &s, now, 0, NULL, NULL), SLOT_ENROLL);

	/* a request in flight wins */
	snprintf(p, sizeof p, "%s/decide.pending", cfg.state_dir);
	assert_int_equal(fg_write_file_atomic(p, "x", 1, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
	assert_int_equal(slot_decide(&cfg, &s, now, 0, NULL, NULL), SLOT_RESUME);
	slot_request_forget(&cfg, &s);
	assert_int_equal(slot_has_pending(&cfg, &s), 0);
	EVP_PKEY_free(k);
	EVP_PKEY_free(other);
}

/* ---- requests on disk ---- */

static void test_request_build_resume(void **state)
{
	char err[512], p[PATH_MAX + 32];
	struct agent_config cfg;
	struct agent_slot s;
	struct agent_facts f;
	struct fg_bundle b;
	struct slot_request r1, r2;
	struct stat sb;
	(void)state;
	make_slot(&cfg, &s, "req");
	memset(&f, 0, sizeof f);
	strcpy(f.hostname, "host-1.example");
	f.secure_boot = -1;
	memset(&b, 0, sizeof b);
	strcpy(b.token, "fgt_00112233445566778899aabbccddeeff");

	assert_int_equal(slot_request_build(&cfg, &s, 1, &b, &f, &r1, err, sizeof err), 0);
	/* nothing installed: renew falls back to enroll */
	assert_int_equal(r1.renew, 0);
	assert_true(fg_request_id_valid(r1.rid));
	snprintf(p, sizeof p, "%s/req.key.new", cfg.state_dir);
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	snprintf(p, sizeof p, "%s/req.pending", cfg.state_dir);
	char *pend = slurp(p, NULL);
	assert_non_null(pend);
	assert_non_null(strstr(pend, r1.rid));
	assert_non_null(strstr(pend, "enroll"));
	free(pend);
	Fleetgate__Envelope *env = fg_wire_unpack(r1.buf, r1.len, 1 << 20, err, sizeof err);
	assert_non_null(env);
	assert_string_equal(env->request_id, r1.rid);
	assert_int_equal(env->version, FG_PROTOCOL_VERSION);
	assert_int_equal(env->body_case, FLEETGATE__ENVELOPE__BODY_ENROLL);
	assert_string_equal(env->enroll->slot, "req");
	assert_string_equal(env->enroll->token, b.token);
	assert_string_equal(env->enroll->facts->hostname, "host-1.example");
	struct fg_csr_info ci;
	EVP_PKEY *csr_key = NULL;
	assert_int_equal(fg_csr_check(env->enroll->csr_der.data, env->enroll->csr_der.len, &ci, &csr_key,
				      err, sizeof err), 0);
	assert_string_equal(ci.cn, "host-1.example");
	assert_int_equal(ci.ndns, 1);
	assert_string_equal(ci.dns[0], "host-1.example");
	assert_int_equal(EVP_PKEY_eq(csr_key, r1.key), 1);
	fg_csr_info_clear(&ci);
	EVP_PKEY_free(csr_key);
	fg_wire_free(env);

	/* a retry (timeout, crash, PENDING) resumes the same id and key */
	assert_int_equal(slot_request_build(&cfg, &s, 0, &b, &f, &r2, err, sizeof err), 0);
	assert_string_equal(r2.rid, r1.rid);
	assert_int_equal(EVP_PKEY_eq(r2.key, r1.key), 1);
	slot_request_clear(&r2);

	/* once forgotten, a new request has a new id and key */
	slot_request_forget(&cfg, &s);
	assert_int_equal(slot_request_build(&cfg, &s, 0, &b, &f, &r2, err, sizeof err), 0);
	assert_string_not_equal(r2.rid, r1.rid);
	assert_int_not_equal(EVP_PKEY_eq(r2.key, r1.key), 1);
	slot_request_clear(&r2);
	slot_request_forget(&cfg, &s);

	/* renewal: new key, current certificate, proof of possession by the current key */
	EVP_PKEY *cur = fg_key_generate(FG_KEY_P256, err, sizeof err);
	X509 *cc = issue(cur, NULL, cur, 0, 86400, 21);
	assert_int_equal(fg_key_save(s.key, cur, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
	write_pem(s.cert, cc);
	assert_int_equal(slot_request_build(&cfg, &s, 1, &b, &f, &r2, err, sizeof err), 0);
	assert_int_equal(r2.renew, 1);
	assert_int_not_equal(EVP_PKEY_eq(r2.key, cur), 1);
	env = fg_wire_unpack(r2.buf, r2.len, 1 << 20, err, sizeof err);
	assert_non_null(env);
	assert_int_equal(env->body_case, FLEETGATE__ENVELOPE__BODY_RENEW);
	Fleetgate__RenewRequest *rr = env->renew;
	X509 *sent = fg_cert_from_der(rr->current_cert_der.data, rr->current_cert_der.len, err, sizeof err);
	assert_non_null(sent);
	assert_int_equal(X509_cmp(sent, cc), 0);
	assert_int_equal(fg_pop_verify(cc, r2.rid, rr->csr_der.data, rr->csr_der.len, rr->pop_signature.data,
				       rr->pop_signature.len, err, sizeof err), 0);
	/* bound to this request id */
	assert_int_equal(fg_pop_verify(cc, r1.rid, rr->csr_der.data, rr->csr_der.len, rr->pop_signature.data,
				       rr->pop_signature.len, err, sizeof err), -1);
	X509_free(sent);
	fg_wire_free(env);
	slot_request_clear(&r2);
	slot_request_forget(&cfg, &s);
	slot_request_clear(&r1);
	X509_free(cc);
	EVP_PKEY_free(cur);
}

/* ---- reload hook ---- */

static void test_hook(void **state)
{
	struct agent_slot s;
	char err[512], out[256], want[1024];
	(void)state;
	memset(&s, 0, sizeof s);
	strcpy(s.name, "web");
	strcpy(s.key, "/etc/k.pem");
	strcpy(s.cert, "/etc/c.pem");
	path_in(out, sizeof out, "hook.env");
	snprintf(s.reload, sizeof s.reload, "echo \"$FLEETGATE_SLOT $FLEETGATE_CERT $FLEETGATE_KEY [$FLEETGATE_CHAIN]\" > %s",
		 out);
	setenv("FLEETGATE_SLOT", "inherited", 1);
	assert_int_equal(slot_run_hook(&s, 10, err, sizeof err), 0);
	unsetenv("FLEETGATE_SLOT");
	char *got = slurp(out, NULL);
	assert_non_null(got);
	snprintf(want, sizeof want, "web /etc/c.pem /etc/k.pem []\n");
	assert_string_equal(got, want);
	free(got);

	strcpy(s.reload, "exit 3");
	assert_int_equal(slot_run_hook(&s, 10, err, sizeof err), -1);
	assert_non_null(strstr(err, "exited with status 3"));
	strcpy(s.reload, "");
	assert_int_equal(slot_run_hook(&s, 10, err, sizeof err), 0);

	/* the daemon blocks SIGTERM for its signalfd and ignores SIGPIPE; a
	 * hook gets default handling (an ignored signal would survive exec,
	 * and a non-interactive sh cannot undo that) */
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, &old);
	void (*prev)(int) = signal(SIGTERM, SIG_IGN);
	strcpy(s.reload, "kill -TERM $$; sleep 5; exit 0");
	assert_int_equal(slot_run_hook(&s, 20, err, sizeof err), -1);
	assert_non_null(strstr(err, "killed by signal 15"));
	signal(SIGTERM, prev);
	sigprocmask(SIG_SETMASK, &old, NULL);

	/* a hook that hangs is killed, with its children */
	strcpy(s.reload, "sleep 30; exit 0");
	uint64_t t0 = fg_mono_ns();
	assert_int_equal(slot_run_hook(&s, 1, err, sizeof err), -1);
	assert_true(fg_mono_ns() - t0 < 8000000000u);
	assert_non_null(strstr(err, "did not finish within 1 s"));
}

/* ---- sandbox ---- */

static void test_config_sandbox(void **state)
{
	struct agent_config cfg;
	char err[512];
	(void)state;
	assert_int_equal(load("bundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\n", &cfg, err, sizeof err), 0);
	assert_int_equal(cfg.sandbox, FG_SANDBOX_REQUIRED);
	agent_config_clear(&cfg);
	assert_int_equal(load("sandbox = best-effort\nbundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\n", &cfg,
			      err, sizeof err), 0);
	assert_int_equal(cfg.sandbox, FG_SANDBOX_BEST_EFFORT);
	agent_config_clear(&cfg);
	assert_int_equal(load("sandbox = \"off\"\nbundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\n", &cfg,
			      err, sizeof err), 0);
	assert_int_equal(cfg.sandbox, FG_SANDBOX_OFF);
	agent_config_clear(&cfg);
	assert_int_equal(load("sandbox = on\nbundle = b\nstate_dir = s\n[slot a]\nkey = k\ncert = c\n", &cfg, err,
			      sizeof err), -1);
	assert_non_null(strstr(err, "agent.conf:1: sandbox 'on' is unknown; use required, best-effort or off"));
}

static const struct sandbox_rule *rule_of(const struct sandbox_policy *p, const char *path)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->rules[i].path, path) == 0)
			return &p->rules[i];
	return NULL;
}

/* The policy lists what the configuration names, with the right access,
 * and a reload that needs more than the policy applied is not covered. */
static void test_sandbox_policy(void **state)
{
	struct agent_config cfg;
	struct fg_bundle b;
	struct sandbox_policy p, q;
	char err[512], want[512];
	(void)state;
	memset(&b, 0, sizeof b);
	assert_int_equal(load("bundle = bd/b.bundle\nstate_dir = st\nacme_http01_listen = 0.0.0.0:5002\n"
			      "[slot a]\nkey = keys/a.key\ncert = /srv/certs/a.crt\n", &cfg, err, sizeof err), 0);
	fg_strlcpy(b.endpoint, "tcp://192.0.2.7:4433", sizeof b.endpoint);
	assert_int_equal(sandbox_policy_build(&cfg, &b, &p, err, sizeof err), 0);
	path_in(want, sizeof want, "st");
	assert_non_null(rule_of(&p, want));
	assert_int_equal(rule_of(&p, want)->access, FG_LL_RW_DIR);
	path_in(want, sizeof want, "keys");
	assert_int_equal(rule_of(&p, want)->access, FG_LL_RW_DIR);
	path_in(want, sizeof want, "bd");
	assert_int_equal(rule_of(&p, want)->access, FG_LL_RW_DIR);
	assert_int_equal(rule_of(&p, "/srv/certs")->access, FG_LL_RW_DIR);
	assert_int_equal(rule_of(&p, dir)->access, FG_LL_READ);        /* the config's directory */
	assert_int_equal(rule_of(&p, "/usr")->access, FG_LL_READ);
	for (size_t i = 0; i < p.n; i++)
		assert_int_not_equal(p.rules[i].access, FG_LL_EXEC);     /* nothing is executable */
	assert_int_equal(p.nconnect, 1);
	assert_int_equal(p.connect[0], 4433);
	assert_int_equal(p.nbind, 1);
	assert_int_equal(p.bind[0], 5002);
	assert_string_equal(p.config_dir_writable, "");
	assert_int_equal(sandbox_policy_covers(&p, &p, err, sizeof err), 1);

	/* a gateway name needs DNS, perhaps over TCP */
	fg_strlcpy(b.endpoint, "tcp://gw.example:4433", sizeof b.endpoint);
	assert_int_equal(sandbox_policy_build(&cfg, &b, &q, err, sizeof err), 0);
	assert_int_equal(q.nconnect, 2);
	assert_int_equal(q.connect[1], 53);
	assert_int_equal(sandbox_policy_covers(&p, &q, err, sizeof err), 0);
	assert_non_null(strstr(err, "does not let the agent connect to TCP port 53"));
	sandbox_policy_clear(&q);
	agent_config_clear(&cfg);

	/* a new state directory is not covered; one beneath a writable one is */
	assert_int_equal(load("bundle = bd/b.bundle\nstate_dir = /elsewhere/st\n[slot a]\nkey = keys/a.key\ncert = /srv/certs/a.crt\n",
			      &cfg, err, sizeof err), 0);
	fg_strlcpy(b.endpoint, "tcp://192.0.2.7:4433", sizeof b.endpoint);
	assert_int_equal(sandbox_policy_build(&cfg, &b, &q, err, sizeof err), 0);
	assert_int_equal(sandbox_policy_covers(&p, &q, err, sizeof err), 0);
	assert_non_null(strstr(err, "does not let the agent write /elsewhere/st"));
	sandbox_policy_clear(&q);
	agent_config_clear(&cfg);
	assert_int_equal(load("bundle = bd/b.bundle\nstate_dir = st/sub\n[slot a]\nkey = keys/a.key\ncert = /srv/certs/a.crt\n",
			      &cfg, err, sizeof err), 0);
	assert_int_equal(sandbox_policy_build(&cfg, &b, &q, err, sizeof err), 0);
	assert_int_equal(sandbox_policy_covers(&p, &q, err, sizeof err), 1);
	sandbox_policy_clear(&q);
	agent_config_clear(&cfg);

	/* the configuration next to a slot's files is writable to the agent */
	assert_int_equal(load("bundle = b.bundle\nstate_dir = st\n[slot a]\nkey = a.key\ncert = a.crt\n", &cfg, err,
			      sizeof err), 0);
	assert_int_equal(sandbox_policy_build(&cfg, &b, &q, err, sizeof err), 0);
	assert_string_equal(q.config_dir_writable, dir);
	sandbox_policy_clear(&q);
	agent_config_clear(&cfg);

	fg_strlcpy(b.endpoint, "tcp://nonsense", sizeof b.endpoint);
	assert_int_equal(load("bundle = b.bundle\nstate_dir = st\n[slot a]\nkey = a.key\ncert = a.crt\n", &cfg, err,
			      sizeof err), 0);
	assert_int_equal(sandbox_policy_build(&cfg, &b, &q, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot tell the TCP port of the gateway endpoint 'tcp://nonsense'"));
	agent_config_clear(&cfg);
	sandbox_policy_clear(&p);
}

static void wipe_marker(void *arg)
{
	*(int *)arg = 42;
}

/* The hook runner runs the command of its own copy of the configuration,
 * looked up by slot name, whatever command the caller's slot carries. */
static void test_hookproc(void **state)
{
	struct agent_config cfg;
	struct agent_slot s;
	char err[1024], text[1024], out[512], evil[512];
	int marker = 0;
	(void)state;
	path_in(out, sizeof out, "runner.out");
	path_in(evil, sizeof evil, "runner.evil");
	unlink(out);
	snprintf(text, sizeof text, "bundle = b\nstate_dir = s\n[slot a]\nkey = a.key\ncert = a.crt\n"
		 "reload = echo \"$FLEETGATE_SLOT\" >> %s\n[slot b]\nkey = b.key\ncert = b.crt\nreload = exit 3\n", out);
	assert_int_equal(load(text, &cfg, err, sizeof err), 0);
	struct hookproc *h = hookproc_start(&cfg, wipe_marker, &marker, err, sizeof err);
	assert_non_null(h);
	assert_int_equal(marker, 0);    /* child_init ran in the child only */
	assert_true(hookproc_pid(h) > 0);

	s = cfg.slots[0];
	snprintf(s.reload, sizeof s.reload, "touch %s", evil);   /* not what the runner has */
	assert_int_equal(hookproc_run(h, &s, 10, err, sizeof err), 0);
	char *got = slurp(out, NULL);
	assert_non_null(got);
	assert_string_equal(got, "a\n");
	free(got);
	assert_int_equal(access(evil, F_OK), -1);

	s = cfg.slots[1];
	assert_int_equal(hookproc_run(h, &s, 10, err, sizeof err), -1);
	assert_non_null(strstr(err, "reload command 'exit 3' exited with status 3"));

	strcpy(s.name, "zz");
	assert_int_equal(hookproc_run(h, &s, 10, err, sizeof err), -1);
	assert_non_null(strstr(err, "the hook runner has no slot 'zz'"));

	/* a slot without a command needs no runner */
	s.reload[0] = '\0';
	assert_int_equal(hookproc_run(h, &s, 10, err, sizeof err), 0);

	/* the runner gone: said, not hung */
	pid_t pid = hookproc_pid(h);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	s = cfg.slots[0];
	assert_int_equal(hookproc_run(h, &s, 10, err, sizeof err), -1);
	assert_non_null(strstr(err, "the hook runner"));
	assert_non_null(strstr(err, "restart the agent"));
	hookproc_free(h);
	hookproc_free(NULL);
	agent_config_clear(&cfg);
}

/* ---- install ---- */

struct pki {
	EVP_PKEY *cak;
	X509 *ca;
	char *anchors;
	unsigned char *ca_der;
	size_t ca_len;
};

static void pki_make(struct pki *p)
{
	char err[256];
	p->cak = fg_key_generate(FG_KEY_P256, err, sizeof err);
	p->ca = issue(p->cak, NULL, p->cak, -60, 86400, 1);
	p->anchors = fg_cert_to_pem(p->ca);
	assert_int_equal(fg_cert_to_der(p->ca, &p->ca_der, &p->ca_len), 0);
}

static void pki_free(struct pki *p)
{
	EVP_PKEY_free(p->cak);
	X509_free(p->ca);
	free(p->anchors);
	free(p->ca_der);
}

/* A reply carrying a certificate for r->key (a fresh key is made) from p;
 * free cr->cert_der.data afterwards. */
static X509 *reply_for(struct pki *p, struct slot_request *r, const char *rid, long serial,
		       Fleetgate__CertReply *cr, ProtobufCBinaryData *chain)
{
	char err[256];
	unsigned char *der;
	size_t len;
	memset(r, 0, sizeof *r);
	fg_strlcpy(r->rid, rid, sizeof r->rid);
	r->key = fg_key_generate(FG_KEY_P256, err, sizeof err);
	X509 *leaf = issue(p->cak, p->ca, r->key, -60, 3600, serial);
	assert_int_equal(fg_cert_to_der(leaf, &der, &len), 0);
	fleetgate__cert_reply__init(cr);
	cr->status = FLEETGATE__STATUS__STATUS_OK;
	cr->cert_der.data = der;
	cr->cert_der.len = len;
	chain->data = p->ca_der;
	chain->len = p->ca_len;
	cr->n_chain_der = 1;
	cr->chain_der = chain;
	return leaf;
}

static void test_install_and_rollback(void **state)
{
	char err[1024], path[PATH_MAX + 32];
	struct agent_config cfg;
	struct agent_slot s;
	struct pki p;
	struct stat sb;
	(void)state;
	make_slot(&cfg, &s, "inst");
	s.mode = 0640;
	pki_make(&p);

	struct slot_request r;
	Fleetgate__CertReply cr;
	ProtobufCBinaryData chain;
	X509 *leaf = reply_for(&p, &r, "rid-00000001", 2, &cr, &chain);
	/* pending files of the request, removed by a successful install */
	snprintf(path, sizeof path, "%s/inst.pending", cfg.state_dir);
	assert_int_equal(fg_write_file_atomic(path, "rid-00000001 enroll\n", 20, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);

	char hookok[256];
	path_in(hookok, sizeof hookok, "hook.log");
	snprintf(s.reload, sizeof s.reload, "echo ok >> %s", hookok);
	assert_int_equal(slot_install(&cfg, &s, &r, &cr, p.anchors, err, sizeof err), 0);
	assert_int_equal(stat(s.key, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0640);
	assert_int_equal(stat(s.cert, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0644);
	assert_int_equal(stat(s.chain, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0644);
	X509 *inst = NULL;
	EVP_PKEY *instk = NULL;
	assert_int_equal(slot_installed(&s, &inst, &instk), 1);
	assert_int_equal(X509_cmp(inst, leaf), 0);
	assert_int_equal(EVP_PKEY_eq(instk, r.key), 1);
	X509_free(inst);
	EVP_PKEY_free(instk);
	char *ch = slurp(s.chain, NULL);
	assert_non_null(ch);
	assert_string_equal(ch, p.anchors);
	free(ch);
	char *log = slurp(hookok, NULL);
	assert_non_null(log);
	assert_string_equal(log, "ok\n");
	free(log);
	assert_int_equal(slot_has_pending(&cfg, &s), 0);
	/* a first install has nothing to back up */
	snprintf(path, sizeof path, "%s.prev", s.cert);
	assert_int_equal(stat(path, &sb), -1);

	size_t ocl = 0, okl = 0, ochl = 0;
	char *old_cert = slurp(s.cert, &ocl), *old_key = slurp(s.key, &okl), *old_chain = slurp(s.chain, &ochl);

	/* a second certificate: installed, the first kept as .prev */
	struct slot_request r2;
	Fleetgate__CertReply cr2;
	ProtobufCBinaryData chain2;
	X509 *leaf2 = reply_for(&p, &r2, "rid-00000002", 3, &cr2, &chain2);
	strcpy(s.reload, "true");
	assert_int_equal(slot_install(&cfg, &s, &r2, &cr2, p.anchors, err, sizeof err), 0);
	size_t l = 0;
	char *prev;
	snprintf(path, sizeof path, "%s.prev", s.cert);
	assert_non_null(prev = slurp(path, &l));
	assert_int_equal(l, ocl);
	assert_memory_equal(prev, old_cert, ocl);
	free(prev);
	snprintf(path, sizeof path, "%s.prev", s.key);
	assert_non_null(prev = slurp(path, &l));
	assert_memory_equal(prev, old_key, okl);
	OPENSSL_cleanse(prev, l);
	free(prev);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0640);     /* the old key's mode, never wider */
	assert_int_equal(slot_installed(&s, &inst, NULL), 1);
	assert_int_equal(X509_cmp(inst, leaf2), 0);
	X509_free(inst);
	free(old_cert);
	OPENSSL_cleanse(old_key, okl);
	free(old_key);
	free(old_chain);
	old_cert = slurp(s.cert, &ocl);
	old_key = slurp(s.key, &okl);
	old_chain = slurp(s.chain, &ochl);

	/* a third whose reload hook fails: everything put back byte for byte,
	 * and the hook runs again for the old files */
	struct slot_request r3;
	Fleetgate__CertReply cr3;
	ProtobufCBinaryData chain3;
	X509 *leaf3 = reply_for(&p, &r3, "rid-00000003", 4, &cr3, &chain3);
	char hooklog[512];
	path_in(hooklog, sizeof hooklog, "fail.log");
	snprintf(s.reload, sizeof s.reload, "echo run >> %s; false", hooklog);
	assert_int_equal(slot_install(&cfg, &s, &r3, &cr3, p.anchors, err, sizeof err), -1);
	assert_non_null(strstr(err, "exited with status 1"));
	assert_non_null(strstr(err, "put back"));
	size_t ncl, nkl, nchl;
	char *now_cert = slurp(s.cert, &ncl), *now_key = slurp(s.key, &nkl), *now_chain = slurp(s.chain, &nchl);
	assert_int_equal(ncl, ocl);
	assert_memory_equal(now_cert, old_cert, ocl);
	assert_int_equal(nkl, okl);
	assert_memory_equal(now_key, old_key, okl);
	assert_int_equal(nchl, ochl);
	assert_memory_equal(now_chain, old_chain, ochl);
	assert_int_equal(stat(s.key, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0640);
	free(now_cert);
	free(now_key);
	free(now_chain);
	log = slurp(hooklog, NULL);
	assert_string_equal(log, "run\nrun\n");
	free(log);

	/* a certificate for another key, or from another CA, is refused
	 * before anything is touched (the hook would say so: it fails) */
	EVP_PKEY *saved = r3.key;
	r3.key = r.key;
	assert_int_equal(slot_install(&cfg, &s, &r3, &cr3, p.anchors, err, sizeof err), -1);
	assert_non_null(strstr(err, "does not match"));
	r3.key = saved;
	struct pki other;
	pki_make(&other);
	assert_int_equal(slot_install(&cfg, &s, &r3, &cr3, other.anchors, err, sizeof err), -1);
	assert_non_null(strstr(err, "trust anchors"));
	now_cert = slurp(s.cert, &ncl);
	now_key = slurp(s.key, &nkl);
	assert_int_equal(ncl, ocl);
	assert_memory_equal(now_cert, old_cert, ocl);
	assert_memory_equal(now_key, old_key, okl);
	free(now_cert);
	free(now_key);
	log = slurp(hooklog, NULL);
	assert_string_equal(log, "run\nrun\n");
	free(log);


	pki_free(&other);
	free(old_cert);
	OPENSSL_cleanse(old_key, okl);
	free(old_key);
	free(old_chain);
	free(cr.cert_der.data);
	free(cr2.cert_der.data);
	free(cr3.cert_der.data);
	X509_free(leaf);
	X509_free(leaf2);
	X509_free(leaf3);
	slot_request_clear(&r);
	slot_request_clear(&r2);
	slot_request_clear(&r3);
	pki_free(&p);
}

/* The first install whose hook fails leaves no certificate behind. */
static void test_first_install_rollback(void **state)
{
	char err[1024];
	struct agent_config cfg;
	struct agent_slot s;
	struct pki p;
	struct stat sb;
	struct slot_request r;
	Fleetgate__CertReply cr;
	ProtobufCBinaryData chain;
	(void)state;
	make_slot(&cfg, &s, "first");
	pki_make(&p);
	X509 *leaf = reply_for(&p, &r, "rid-00000009", 9, &cr, &chain);
	strcpy(s.reload, "exit 2");
	assert_int_equal(slot_install(&cfg, &s, &r, &cr, p.anchors, err, sizeof err), -1);
	assert_non_null(strstr(err, "no certificate"));
	assert_int_equal(stat(s.cert, &sb), -1);
	assert_int_equal(stat(s.key, &sb), -1);
	assert_int_equal(stat(s.chain, &sb), -1);
	free(cr.cert_der.data);
	X509_free(leaf);
	slot_request_clear(&r);
	pki_free(&p);
}

/* ---- client against a real CURVE ROUTER ---- */

struct server {
	void *ctx, *sock;
	char pub[41], sec[41];
	char endpoint[128];
};

static void server_start(struct server *sv)
{
	int one = 1;
	size_t n = sizeof sv->endpoint;
	sv->ctx = zmq_ctx_new();
	sv->sock = zmq_socket(sv->ctx, ZMQ_ROUTER);
	assert_int_equal(zmq_curve_keypair(sv->pub, sv->sec), 0);
	assert_int_equal(zmq_setsockopt(sv->sock, ZMQ_CURVE_SERVER, &one, sizeof one), 0);
	assert_int_equal(zmq_setsockopt(sv->sock, ZMQ_CURVE_SECRETKEY, sv->sec, 40), 0);
	assert_int_equal(zmq_bind(sv->sock, "tcp://127.0.0.1:*"), 0);
	assert_int_equal(zmq_getsockopt(sv->sock, ZMQ_LAST_ENDPOINT, sv->endpoint, &n), 0);
}

static void server_stop(struct server *sv)
{
	int zero = 0;
	zmq_setsockopt(sv->sock, ZMQ_LINGER, &zero, sizeof zero);
	zmq_close(sv->sock);
	zmq_ctx_term(sv->ctx);
}

static void send_env(void *sock, zmq_msg_t *id, const char *rid, uint32_t next)
{
	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__CheckInReply cr = FLEETGATE__CHECK_IN_REPLY__INIT;
	uint8_t *buf;
	size_t len;
	zmq_msg_t copy;
	cr.status = FLEETGATE__STATUS__STATUS_OK;
	cr.next_checkin = next;
	env.version = FG_PROTOCOL_VERSION;
	env.request_id = (char *)rid;
	env.body_case = FLEETGATE__ENVELOPE__BODY_CHECKIN_REPLY;
	env.checkin_reply = &cr;
	fg_wire_pack(&env, &buf, &len);
	zmq_msg_init(&copy);
	zmq_msg_copy(&copy, id);
	zmq_msg_send(&copy, sock, ZMQ_SNDMORE);
	zmq_send(sock, buf, len, 0);
	free(buf);
}

/* Answer one request: first with a stray request id (to be ignored), then properly. */
static void *server_answer(void *arg)
{
	struct server *sv = arg;
	zmq_msg_t id, body;
	int timeout = 10000;
	char err[256];
	zmq_setsockopt(sv->sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
	zmq_msg_init(&id);
	zmq_msg_init(&body);
	if (zmq_msg_recv(&id, sv->sock, 0) >= 0 && zmq_msg_recv(&body, sv->sock, 0) >= 0) {
		Fleetgate__Envelope *req = fg_wire_unpack(zmq_msg_data(&body), zmq_msg_size(&body), 1 << 20,
							  err, sizeof err);
		if (req) {
			send_env(sv->sock, &id, "stray-request-0001", 1);
			send_env(sv->sock, &id, req->request_id, 42);
			fg_wire_free(req);
		}
	}
	zmq_msg_close(&id);
	zmq_msg_close(&body);
	return NULL;
}

static void test_client(void **state)
{
	struct server sv;
	char pub[41], sec[41], other_pub[41], other_sec[41], err[512];
	uint8_t req[] = { 0x08, 0x01 };
	Fleetgate__Envelope *reply = NULL;
	pthread_t th;
	(void)state;
	assert_int_equal(zmq_curve_keypair(pub, sec), 0);
	assert_int_equal(zmq_curve_keypair(other_pub, other_sec), 0);
	server_start(&sv);

	/* the right key: the reply to our request id, the stray one dropped */
	struct client *c = client_new(sv.endpoint, sv.pub, pub, sec, err, sizeof err);
	assert_non_null(c);
	assert_true(client_fd(c) >= 0);
	assert_int_equal(pthread_create(&th, NULL, server_answer, &sv), 0);
	Fleetgate__Envelope e = FLEETGATE__ENVELOPE__INIT;
	uint8_t *buf;
	size_t len;
	e.version = 1;
	e.request_id = "0123456789abcdef";
	e.body_case = FLEETGATE__ENVELOPE__BODY_CHECKIN;
	Fleetgate__CheckIn ci = FLEETGATE__CHECK_IN__INIT;
	e.checkin = &ci;
	assert_int_equal(fg_wire_pack(&e, &buf, &len), 0);
	assert_int_equal(client_call(c, buf, len, e.request_id, 8000, &reply, err, sizeof err), CLIENT_OK);
	pthread_join(th, NULL);
	assert_string_equal(reply->request_id, "0123456789abcdef");
	assert_int_equal(reply->body_case, FLEETGATE__ENVELOPE__BODY_CHECKIN_REPLY);
	assert_int_equal(reply->checkin_reply->next_checkin, 42);
	fg_wire_free(reply);
	free(buf);
	client_free(c);

	/* a bundle with another gateway's key: the handshake fails, and the
	 * client says so without waiting for the whole timeout */
	c = client_new(sv.endpoint, other_pub, pub, sec, err, sizeof err);
	assert_non_null(c);
	uint64_t t0 = fg_mono_ns();
	assert_int_equal(client_call(c, req, sizeof req, "0123456789abcdef", 6000, &reply, err, sizeof err),
			 CLIENT_TIMEOUT);
	assert_true(fg_mono_ns() - t0 < 5000000000u);
	assert_non_null(strstr(err, "refused the CURVE handshake"));
	assert_non_null(strstr(err, "get a fresh bundle"));
	assert_int_equal(client_handshake_failed(c), 1);
	client_free(c);
	server_stop(&sv);

	/* nobody listening */
	char ep[160];
	snprintf(ep, sizeof ep, "%s", sv.endpoint);   /* the port just closed */
	c = client_new(ep, other_pub, pub, sec, err, sizeof err);
	assert_non_null(c);
	assert_int_equal(client_call(c, req, sizeof req, "0123456789abcdef", 1000, &reply, err, sizeof err),
			 CLIENT_TIMEOUT);
	assert_non_null(strstr(err, "no answer from gateway at"));
	assert_non_null(strstr(err, "is it running"));
	assert_int_equal(client_handshake_failed(c), 0);
	client_free(c);

	/* bad endpoint or key */
	assert_null(client_new("nonsense", other_pub, pub, sec, err, sizeof err));
	assert_non_null(strstr(err, "endpoint"));
	assert_null(client_new(ep, "short", pub, sec, err, sizeof err));
	assert_non_null(strstr(err, "CURVE key"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_good),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_config_example),
		cmocka_unit_test(test_config_acme),
		cmocka_unit_test(test_facts),
		cmocka_unit_test(test_renew_due),
		cmocka_unit_test(test_decide),
		cmocka_unit_test(test_request_build_resume),
		cmocka_unit_test(test_hook),
		cmocka_unit_test(test_config_sandbox),
		cmocka_unit_test(test_sandbox_policy),
		cmocka_unit_test(test_hookproc),
		cmocka_unit_test(test_install_and_rollback),
		cmocka_unit_test(test_first_install_rollback),
		cmocka_unit_test(test_client),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
