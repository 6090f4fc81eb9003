/*
 * Unit tests for the local CA plugin, loaded with dlopen from the build tree
 * and driven through the plugin ABI with a host of this test's own (state in
 * memory): CA creation, issuance contents, write-ahead resume with the same
 * serial, serial redraw, distinct serials, other CA key types.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "fleetgate/plugin.h"
#include "fg_x509.h"

#define MAXSTATE 1024

static struct { char key[128]; unsigned char *val; size_t len; } kv[MAXSTATE];
static int nkv, taken_once;
static char serials[MAXSTATE][64];
static int nserials;
static char dir[64];
static void *dl;
static const struct fg_backend_ops *ops;

struct fg_job { char id[32]; };

static void h_log(void *ctx, enum fg_level l, const char *rid, const char *msg) { (void)ctx; (void)l; (void)rid; (void)msg; }
static int64_t h_now(void *ctx) { (void)ctx; return (int64_t)time(NULL); }
static int h_random(void *ctx, void *buf, size_t len) { (void)ctx; return RAND_bytes(buf, (int)len) == 1 ? 0 : -1; }

static int get(const char *k, unsigned char **v, size_t *l)
{
	for (int i = 0; i < nkv; i++)
		if (strcmp(kv[i].key, k) == 0) {
			*v = malloc(kv[i].len);
			memcpy(*v, kv[i].val, kv[i].len);
			*l = kv[i].len;
			return 1;
		}
	return 0;
}

static int put(const char *k, const unsigned char *v, size_t l)
{
	if (nkv >= MAXSTATE)
		return -1;
	snprintf(kv[nkv].key, sizeof kv[nkv].key, "%s", k);
	kv[nkv].val = malloc(l);
	memcpy(kv[nkv].val, v, l);
	kv[nkv].len = l;
	nkv++;
	return 0;
}

static int h_state_get(void *ctx, const char *k, unsigned char **v, size_t *l) { (void)ctx; return get(k, v, l); }
static int h_state_put(void *ctx, const char *k, const unsigned char *v, size_t l) { (void)ctx; return put(k, v, l); }
static int h_job_get(struct fg_job *j, const char *k, unsigned char **v, size_t *l)
{
	char key[128];
	snprintf(key, sizeof key, "%s/%s", j->id, k);
	return get(key, v, l);
}
static int h_job_put(struct fg_job *j, const char *k, const unsigned char *v, size_t l)
{
	char key[128];
	snprintf(key, sizeof key, "%s/%s", j->id, k);
	return put(key, v, l);
}
static int h_serial_reserve(void *ctx, const char *s)
{
	(void)ctx;
	if (taken_once) {         /* pretend the first draw collided */
		taken_once = 0;
		return 1;
	}
	for (int i = 0; i < nserials; i++)
		if (strcmp(serials[i], s) == 0)
			return 1;
	snprintf(serials[nserials++], sizeof serials[0], "%s", s);
	return 0;
}

static const struct fg_host host = {
	.abi_version = FG_PLUGIN_ABI_VERSION, .struct_size = sizeof(struct fg_host), .ctx = NULL,
	.log = h_log, .now = h_now, .random = h_random, .state_get = h_state_get,
	.state_put = h_state_put, .job_get = h_job_get, .job_put = h_job_put,
	.serial_reserve = h_serial_reserve,
};

static int setup(void **state)
{
	char path[512];
	(void)state;
	strcpy(dir, "/tmp/fg-ca.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	const char *bd = getenv("FG_PLUGIN_DIR_BUILD");
	snprintf(path, sizeof path, "%s/fleetgate-local.so", bd ? bd : "plugins/local");
	dl = dlopen(path, RTLD_NOW);
	if (dl == NULL) {
		fprintf(stderr, "%s\n", dlerror());
		return -1;
	}
	fg_backend_entry_fn entry;
	*(void **)&entry = dlsym(dl, FG_BACKEND_SYMBOL);
	ops = entry ? entry() : NULL;
	return ops ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];
	(void)state;
	for (int i = 0; i < nkv; i++)
		free(kv[i].val);
	dlclose(dl);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void *open_ca(const char *sub, const char *key_type, int create, char *err, size_t errlen)
{
	struct fg_kv s[5] = {
		{ "state_dir", dir }, { "ca_dir", sub }, { "key_type", key_type }, { "name", "local" },
		{ "create", create ? "yes" : "no" },
	};
	void *st = NULL;
	if (ops->open(&host, s, 5, &st, err, errlen) != 0)
		return NULL;
	return st;
}

static unsigned char *make_csr(size_t *len)
{
	char err[256];
	unsigned char *der;
	EVP_PKEY *k = fg_key_generate(FG_KEY_P256, err, sizeof err);
	const char *dns[] = { "ignored.example" };
	assert_int_equal(fg_csr_build(k, "ignored", dns, 1, &der, len, err, sizeof err), 0);
	EVP_PKEY_free(k);
	return der;
}

static void request(struct fg_issue_request *r, struct fg_job *job, const unsigned char *csr, size_t len)
{
	static const char *dns[] = { "host1.example.com" };
	static const char *ips[] = { "192.0.2.7", "2001:db8::1" };
	static const char *eku[] = { "clientAuth", "serverAuth" };
	memset(r, 0, sizeof *r);
	r->struct_size = sizeof *r;
	r->request_id = job->id;
	r->device_id = "dev_1";
	r->slot = "default";
	r->job = job;
	r->csr_der = csr;
	r->csr_len = len;
	r->subject_cn = "host1";
	r->dns_names = dns;
	r->n_dns = 1;
	r->ip_names = ips;
	r->n_ip = 2;
	r->not_before = time(NULL) - 60;
	r->not_after = time(NULL) + 86400L * 365 * 20;   /* beyond the CA: clamped */
	r->key_usage = FG_KU_DIGITAL_SIGNATURE | FG_KU_KEY_AGREEMENT;
	r->ext_key_usage = eku;
	r->n_eku = 2;
	r->profile = "default";
}

static void test_create_and_issue(void **state)
{
	char err[512];
	struct stat sb;
	(void)state;
	assert_null(open_ca("ca", "p256", 0, err, sizeof err));
	assert_non_null(strstr(err, "fleetgate init"));
	void *ca = open_ca("ca", "p256", 1, err, sizeof err);
	assert_non_null(ca);
	char path[256];
	snprintf(path, sizeof path, "%s/ca/ca.key", dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	ops->close(ca);
	ca = open_ca("ca", "p256", 0, err, sizeof err);
	assert_non_null(ca);

	struct fg_cert_list cl;
	assert_int_equal(ops->cacerts(ca, &cl, err, sizeof err), 0);
	const unsigned char *p = cl.der[0];
	X509 *cacert = d2i_X509(NULL, &p, (long)cl.len[0]);
	fg_cert_list_clear(&cl);

	size_t len;
	unsigned char *csr = make_csr(&len);
	struct fg_job job = { "job-one" };
	struct fg_issue_request r;
	struct fg_issue_result res;
	request(&r, &job, csr, len);
	assert_int_equal(ops->issue(ca, &r, &res), 0);
	assert_int_equal(res.status, FG_ISSUE_OK);
	assert_int_equal(res.n_chain, 1);
	p = res.cert_der;
	X509 *leaf = d2i_X509(NULL, &p, (long)res.cert_len);
	assert_non_null(leaf);
	assert_int_equal(X509_verify(leaf, X509_get0_pubkey(cacert)), 1);
	char cn[64];
	X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof cn);
	assert_string_equal(cn, "host1");
	assert_int_equal(X509_check_ca(leaf), 0);
	assert_true(X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE);
	assert_true(X509_get_key_usage(leaf) & KU_KEY_AGREEMENT);
	assert_false(X509_get_key_usage(leaf) & KU_KEY_CERT_SIGN);
	assert_true(X509_get_extended_key_usage(leaf) & XKU_SSL_CLIENT);
	assert_true(X509_get_extended_key_usage(leaf) & XKU_SSL_SERVER);
	assert_non_null(X509_get0_subject_key_id(leaf));
	assert_non_null(X509_get0_authority_key_id(leaf));
	assert_int_equal(X509_check_host(leaf, "host1.example.com", 0, 0, NULL), 1);
	assert_int_equal(X509_check_host(leaf, "ignored.example", 0, 0, NULL), 0);   /* names from the request, not the CSR */
	assert_int_equal(X509_check_ip_asc(leaf, "192.0.2.7", 0), 1);
	assert_int_equal(X509_check_ip_asc(leaf, "2001:db8::1", 0), 1);
	assert_true(ASN1_TIME_compare(X509_get0_notAfter(leaf), X509_get0_notAfter(cacert)) <= 0);
	const ASN1_INTEGER *sn = X509_get0_serialNumber(leaf);
	BIGNUM *bn = ASN1_INTEGER_to_BN(sn, NULL);
	assert_false(BN_is_negative(bn));
	assert_true(BN_num_bits(bn) >= 64);
	assert_true(BN_num_bytes(bn) <= 20);
	BN_free(bn);

	/* the same job again: same serial (resume from the write-ahead record) */
	struct fg_issue_result res2;
	assert_int_equal(ops->issue(ca, &r, &res2), 0);
	assert_int_equal(res2.status, FG_ISSUE_OK);
	p = res2.cert_der;
	X509 *again = d2i_X509(NULL, &p, (long)res2.cert_len);
	assert_int_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(leaf), X509_get0_serialNumber(again)), 0);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(leaf), X509_get_subject_name(again)), 0);
	assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(leaf), X509_get0_notAfter(again)), 0);
	assert_int_equal(nserials, 1);

	/* a collision on the first draw: another serial is drawn */
	taken_once = 1;
	struct fg_job job2 = { "job-two" };
	request(&r, &job2, csr, len);
	struct fg_issue_result res3;
	assert_int_equal(ops->issue(ca, &r, &res3), 0);
	assert_int_equal(res3.status, FG_ISSUE_OK);
	assert_int_equal(nserials, 2);

	/* many jobs, all distinct serials */
	for (int i = 0; i < 100; i++) {
		struct fg_job j;
		struct fg_issue_result rr;
		snprintf(j.id, sizeof j.id, "job-many-%d", i);
		request(&r, &j, csr, len);
		assert_int_equal(ops->issue(ca, &r, &rr), 0);
		assert_int_equal(rr.status, FG_ISSUE_OK);
		fg_issue_result_clear(&rr);
	}
	assert_int_equal(nserials, 102);

	/* nothing to name: refused */
	r.subject_cn = "";
	r.n_dns = r.n_ip = 0;
	struct fg_issue_result rej;
	assert_int_equal(ops->issue(ca, &r, &rej), 0);
	assert_int_equal(rej.status, FG_ISSUE_REJECTED);
	fg_issue_result_clear(&rej);

	/* revocation is recorded */
	assert_int_equal(ops->revoke(ca, res.cert_der, res.cert_len, FG_REVOKE_CESSATION, err, sizeof err), 0);
	assert_true(nkv > 0);

	X509_free(again);
	X509_free(leaf);
	X509_free(cacert);
	fg_issue_result_clear(&res);
	fg_issue_result_clear(&res2);
	fg_issue_result_clear(&res3);
	free(csr);
	ops->close(ca);
}

static void test_other_ca_types(void **state)
{
	char err[512];
	(void)state;
	const char *types[] = { "p384", "rsa3072" };
	for (int i = 0; i < 2; i++) {
		char sub[32];
		snprintf(sub, sizeof sub, "ca-%s", types[i]);
		void *ca = open_ca(sub, types[i], 1, err, sizeof err);
		assert_non_null(ca);
		size_t len;
		unsigned char *csr = make_csr(&len);
		struct fg_job job;
		snprintf(job.id, sizeof job.id, "job-%s", types[i]);
		struct fg_issue_request r;
		struct fg_issue_result res;
		request(&r, &job, csr, len);
		assert_int_equal(ops->issue(ca, &r, &res), 0);
		assert_int_equal(res.status, FG_ISSUE_OK);
		fg_issue_result_clear(&res);
		free(csr);
		ops->close(ca);
	}
	assert_null(open_ca("ca-bad", "dsa", 1, err, sizeof err));
	assert_non_null(strstr(err, "key_type"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_and_issue),
		cmocka_unit_test(test_other_ca_types),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
