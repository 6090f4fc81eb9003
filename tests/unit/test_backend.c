/*
 * Unit tests for the backend loader: where plugins are looked for and what
 * the error says when they are not there, the ABI checks on an ops table,
 * and the local CA loaded through backends_open with the real host services
 * (SQLite store): creation only with create, write-ahead job state, serial
 * reservation and revocation records landing in the store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "backend.h"
#include "config.h"
#include "fg_log.h"
#include "store.h"

static char dir[64];
static char build_dir[PATH_MAX];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	const char *bd = getenv("FG_PLUGIN_DIR_BUILD");
	(void)state;
	if (bd == NULL || realpath(bd, build_dir) == NULL) {
		fprintf(stderr, "FG_PLUGIN_DIR_BUILD must name the built plugins/local directory\n");
		return -1;
	}
	snprintf(dir, sizeof dir, "/tmp/fg-backend.XXXXXX");
	unsetenv("FLEETGATE_PLUGIN_DIR");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	unsetenv("FLEETGATE_PLUGIN_DIR");
	return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_plugin_path(void **state)
{
	char out[PATH_MAX], err[2048], want[PATH_MAX + 32];
	(void)state;

	snprintf(want, sizeof want, "%s/fleetgate-local.so", build_dir);

	/* The environment names the directory. */
	setenv("FLEETGATE_PLUGIN_DIR", build_dir, 1);
	assert_int_equal(backend_plugin_path(NULL, "local", out, sizeof out, err, sizeof err), 0);
	assert_string_equal(out, want);

	/* The config's plugin_dir wins over the environment and is the only
	 * place looked at. */
	assert_int_equal(backend_plugin_path(dir, "local", out, sizeof out, err, sizeof err), -1);
	assert_non_null(strstr(err, dir));
	assert_non_null(strstr(err, "plugin_dir"));
	assert_int_equal(backend_plugin_path(build_dir, "local", out, sizeof out, err, sizeof err), 0);
	assert_string_equal(out, want);

	/* A named directory without the plugin: an error naming the variable. */
	setenv("FLEETGATE_PLUGIN_DIR", dir, 1);
	assert_int_equal(backend_plugin_path("", "local", out, sizeof out, err, sizeof err), -1);
	assert_non_null(strstr(err, "FLEETGATE_PLUGIN_DIR"));
	assert_non_null(strstr(err, "fleetgate-local.so"));

	/* Nothing named: the build tree next to this executable
	 * (<build>/tests/../plugins/local/). */
	unsetenv("FLEETGATE_PLUGIN_DIR");
	assert_int_equal(backend_plugin_path(NULL, "local", out, sizeof out, err, sizeof err), 0);
	assert_string_equal(out, want);

	/* A missing plugin lists every place tried, the installed one too. */
	assert_int_equal(backend_plugin_path(NULL, "nosuch", out, sizeof out, err, sizeof err), -1);
	assert_non_null(strstr(err, "plugin 'nosuch' not found"));
	assert_non_null(strstr(err, "/../plugins/nosuch/fleetgate-nosuch.so"));
	assert_non_null(strstr(err, FG_PLUGIN_DIR "/fleetgate-nosuch.so"));

	/* Names are plain names. */
	assert_int_equal(backend_plugin_path(NULL, "../local", out, sizeof out, err, sizeof err), -1);
	assert_non_null(strstr(err, "not a plain name"));
}

static int dummy_open(const struct fg_host *h, const struct fg_kv *kv, size_t n, void **st, char *err,
		      size_t errlen)
{
	(void)h;
	(void)kv;
	(void)n;
	(void)st;
	(void)err;
	(void)errlen;
	return -1;
}

static int dummy_issue(void *st, const struct fg_issue_request *r, struct fg_issue_result *res)
{
	(void)st;
	(void)r;
	(void)res;
	return -1;
}

static void dummy_close(void *st)
{
	(void)st;
}

static void test_check_ops(void **state)
{
	char err[1024];
	(void)state;
	struct fg_backend_ops good = {
		.abi_version = FG_PLUGIN_ABI_VERSION,
		.struct_size = sizeof(struct fg_backend_ops),
		.name = "dummy",
		.open = dummy_open,
		.issue = dummy_issue,
		.close = dummy_close,
	};
	struct fg_backend_ops o;

	assert_int_equal(backend_check_ops(&good, "dummy", "/x/fleetgate-dummy.so", err, sizeof err), 0);

	o = good;
	o.abi_version = FG_PLUGIN_ABI_VERSION + 1;
	assert_int_equal(backend_check_ops(&o, "dummy", "/x/fleetgate-dummy.so", err, sizeof err), -1);
	char want[128];
	snprintf(want, sizeof want, "was built for plugin ABI %d", FG_PLUGIN_ABI_VERSION + 1);
	assert_non_null(strstr(err, want));
	snprintf(want, sizeof want, "speaks ABI %d", FG_PLUGIN_ABI_VERSION);
	assert_non_null(strstr(err, want));
	assert_non_null(strstr(err, "/x/fleetgate-dummy.so"));
	assert_non_null(strstr(err, "rebuild or update"));

	o = good;
	o.abi_version = 0;
	assert_int_equal(backend_check_ops(&o, "dummy", "p", err, sizeof err), -1);

	o = good;
	o.struct_size = (uint32_t)offsetof(struct fg_backend_ops, close);
	assert_int_equal(backend_check_ops(&o, "dummy", "p", err, sizeof err), -1);
	assert_non_null(strstr(err, "bytes"));

	o = good;
	o.issue = NULL;
	assert_int_equal(backend_check_ops(&o, "dummy", "p", err, sizeof err), -1);

	assert_int_equal(backend_check_ops(NULL, "dummy", "p", err, sizeof err), -1);
}

/* A config with one backend "main" on plugin `plugin`; free with free_cfg. */
static struct gw_config *make_cfg(const char *plugin)
{
	struct gw_config *cfg = calloc(1, sizeof *cfg);
	assert_non_null(cfg);
	snprintf(cfg->state_dir, sizeof cfg->state_dir, "%s", dir);
	snprintf(cfg->store_path, sizeof cfg->store_path, "%s/fleetgate.db", dir);
	cfg->backends = calloc(1, sizeof *cfg->backends);
	cfg->nbackends = 1;
	snprintf(cfg->backends[0].name, sizeof cfg->backends[0].name, "main");
	snprintf(cfg->backends[0].plugin, sizeof cfg->backends[0].plugin, "%s", plugin);
	cfg->backends[0].settings = calloc(3, sizeof(struct fg_kv));
	cfg->backends[0].settings[0] = (struct fg_kv){ "state_dir", cfg->state_dir };
	cfg->backends[0].settings[1] = (struct fg_kv){ "name", "main" };
	cfg->backends[0].settings[2] = (struct fg_kv){ "create", "yes" };   /* ignored: only init creates */
	cfg->backends[0].nsettings = 3;
	return cfg;
}

static void free_cfg(struct gw_config *cfg)
{
	free(cfg->backends[0].settings);
	free(cfg->backends);
	free(cfg);
}

static unsigned char *make_csr(size_t *len)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509_REQ *rq = X509_REQ_new();
	unsigned char *der = NULL;

	assert_non_null(k);
	assert_int_equal(X509_REQ_set_pubkey(rq, k), 1);
	assert_true(X509_REQ_sign(rq, k, EVP_sha256()) > 0);
	int n = i2d_X509_REQ(rq, &der);
	assert_true(n > 0);
	*len = (size_t)n;
	X509_REQ_free(rq);
	EVP_PKEY_free(k);
	return der;
}

static void test_open_local_with_store(void **state)
{
	char err[2048];
	(void)state;
	struct gw_config *cfg = make_cfg("local");
	setenv("FLEETGATE_PLUGIN_DIR", build_dir, 1);

	/* No store yet: the store's own message. */
	assert_null(backends_open(cfg, 1, err, sizeof err));
	assert_non_null(strstr(err, "fleetgate init"));

	struct store *st = store_open(cfg->store_path, 1, err, sizeof err);
	assert_non_null(st);

	/* No CA and no create: refused, naming the backend. The config's own
	 * "create" setting does not count. */
	assert_null(backends_open(cfg, 0, err, sizeof err));
	assert_non_null(strstr(err, "backend main"));
	assert_non_null(strstr(err, "no CA in"));

	struct backends *bs = backends_open(cfg, 1, err, sizeof err);
	assert_non_null(bs);
	backends_free(bs);
	bs = backends_open(cfg, 0, err, sizeof err);
	assert_non_null(bs);
	assert_null(backends_find(bs, "local"));
	struct backend *b = backends_find(bs, "main");
	assert_non_null(b);
	assert_string_equal(b->ops->name, "local");

	/* Issue through the real host services: the job's state and the
	 * serial end up in the store. */
	size_t len;
	unsigned char *csr = make_csr(&len);
	struct fg_job job = { st, "KEYKEYKEYKEYKEYKEYKEYKEYKEYKEYKEYKEYKEY1", "req-1" };
	static const char *dns[] = { "a.example.com" };
	struct fg_issue_request r = {
		.struct_size = sizeof r, .request_id = "req-1", .device_id = "dev", .slot = "s",
		.job = &job, .csr_der = csr, .csr_len = len, .subject_cn = "a", .dns_names = dns,
		.n_dns = 1, .not_before = time(NULL), .not_after = time(NULL) + 86400,
		.key_usage = FG_KU_DIGITAL_SIGNATURE, .profile = "default",
	};
	struct fg_issue_result res, res2;
	assert_int_equal(b->ops->issue(b->state, &r, &res), 0);
	assert_int_equal(res.status, FG_ISSUE_OK);
	unsigned char *val = NULL;
	size_t vlen = 0;
	assert_int_equal(store_job_state_get(st, job.curve_key, job.request_id, "tbs", &val, &vlen, err,
					     sizeof err), 1);
	assert_true(vlen > 0);
	free(val);

	const unsigned char *p = res.cert_der;
	X509 *x = d2i_X509(NULL, &p, (long)res.cert_len);
	assert_non_null(x);
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = BN_bn2hex(bn);
	/* Reserved under the backend's name: taken now. */
	assert_int_equal(store_serial_reserve(st, "main", hex, time(NULL), err, sizeof err), 1);

	/* The same job again: the same serial. */
	assert_int_equal(b->ops->issue(b->state, &r, &res2), 0);
	assert_int_equal(res2.status, FG_ISSUE_OK);
	p = res2.cert_der;
	X509 *x2 = d2i_X509(NULL, &p, (long)res2.cert_len);
	assert_int_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(x), X509_get0_serialNumber(x2)), 0);

	/* Revocation goes to the backend's plugin state. */
	assert_int_equal(b->ops->revoke(b->state, res.cert_der, res.cert_len, FG_REVOKE_SUPERSEDED, err,
					sizeof err), 0);
	char key[96];
	snprintf(key, sizeof key, "revoked:%s", hex);
	assert_int_equal(store_plugin_state_get(st, "main", key, &val, &vlen, err, sizeof err), 1);
	assert_true(vlen > 2 && val[0] == '4' && val[1] == ' ');
	free(val);

	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(x);
	X509_free(x2);
	fg_issue_result_clear(&res);
	fg_issue_result_clear(&res2);
	OPENSSL_free(csr);

	/* One backend call per job at a time; jobs are (curve key, request id). */
	assert_int_equal(backends_job_claim(bs, "K1", "r1"), 1);
	assert_int_equal(backends_job_claim(bs, "K1", "r1"), 0);
	assert_int_equal(backends_job_claim(bs, "K1", "r2"), 1);
	assert_int_equal(backends_job_claim(bs, "K2", "r1"), 1);
	backends_job_release(bs, "K1", "r1");
	assert_int_equal(backends_job_claim(bs, "K1", "r1"), 1);
	backends_job_release(bs, "K1", "r1");
	backends_job_release(bs, "K1", "r2");
	backends_job_release(bs, "K2", "r1");
	backends_job_release(bs, "K2", "r1");     /* not claimed: a no-op */
	assert_int_equal(backends_job_claim(bs, "K2", "r1"), 1);   /* left claimed: freed with bs */

	/* No http-01 answer is published for an unknown token. */
	char ka[256] = "";
	assert_int_equal(backends_http01_get(bs, "unknown-token", ka, sizeof ka), 0);
	assert_string_equal(ka, "");
	backends_free(bs);
	store_free(st);
	free_cfg(cfg);
}

static void test_bad_plugins(void **state)
{
	char err[2048], path[PATH_MAX];
	(void)state;

	struct store *st = NULL;
	struct gw_config *cfg = make_cfg("bogus");
	st = store_open(cfg->store_path, 1, err, sizeof err);
	assert_non_null(st);

	/* Not a shared object. */
	snprintf(path, sizeof path, "%s/fleetgate-bogus.so", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("not an ELF file\n", f);
	fclose(f);
	setenv("FLEETGATE_PLUGIN_DIR", dir, 1);
	assert_null(backends_open(cfg, 0, err, sizeof err));
	assert_non_null(strstr(err, "backend main: cannot load plugin"));

	/* Missing altogether. */
	snprintf(cfg->backends[0].plugin, sizeof cfg->backends[0].plugin, "absent");
	assert_null(backends_open(cfg, 0, err, sizeof err));
	assert_non_null(strstr(err, "plugin 'absent' not found"));

	store_free(st);
	free_cfg(cfg);
}

int main(void)
{
	fg_log_init("test_backend", FG_LOG_WARN, FG_LOG_TEXT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_plugin_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_ops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_local_with_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_plugins, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
