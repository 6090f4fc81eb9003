/*
 * Unit tests for the local CA plugin. The test loads the built module with
 * dlopen (from $FG_PLUGIN_DIR_BUILD) and drives it only through the plugin
 * ABI, with a host of its own that keeps plugin state, job state and serial
 * reservations in memory and can be told to refuse things: CA creation and
 * reopening, certificate contents, write-ahead resume with the same serial
 * and TBS, serial redraws, distinct serials (also from several threads),
 * rejections, revocation records, P-384 and RSA-3072 CAs, CRLs (make_crl),
 * CRL distribution point and OCSP URLs in leaves, and OCSP (ocsp_respond).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "fleetgate/plugin.h"

#define MAXREC 4096

/* The in-memory host. Records are key -> value, overwritten on put; job
 * records are keyed "<job id>/<key>". */
struct rec {
	char key[160];
	unsigned char *val;
	size_t len;
};

struct fake {
	pthread_mutex_t lock;
	struct rec recs[MAXREC];
	int nrecs;
	char serials[MAXREC][48];
	int nserials;
	int reserve_calls;
	int taken_next;          /* answer "taken" to this many reservations */
	int fail_job_put;        /* job_put fails */
	int fail_reserve;        /* serial_reserve errors */
	int64_t now;
};

struct fg_job {
	struct fake *f;
	char id[48];
};

static struct fake *fk;
static void *dl;
static const struct fg_backend_ops *ops;
static char dir[64];

static void h_log(void *ctx, enum fg_level l, const char *rid, const char *msg)
{
	(void)ctx;
	(void)l;
	(void)rid;
	(void)msg;
}

static int64_t h_now(void *ctx)
{
	return ((struct fake *)ctx)->now;
}

static int h_random(void *ctx, void *buf, size_t len)
{
	(void)ctx;
	return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static int rec_get(struct fake *f, const char *k, unsigned char **v, size_t *l)
{
	int r = 0;
	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->nrecs; i++)
		if (strcmp(f->recs[i].key, k) == 0) {
			*v = malloc(f->recs[i].len ? f->recs[i].len : 1);
			memcpy(*v, f->recs[i].val, f->recs[i].len);
			*l = f->recs[i].len;
			r = 1;
			break;
		}
	pthread_mutex_unlock(&f->lock);
	return r;
}

static int rec_put(struct fake *f, const char *k, const unsigned char *v, size_t l)
{
	int i, r = 0;
	pthread_mutex_lock(&f->lock);
	for (i = 0; i < f->nrecs; i++)
		if (strcmp(f->recs[i].key, k) == 0)
			break;
	if (i == MAXREC) {
		r = -1;
		goto out;
	}
	if (i == f->nrecs)
		f->nrecs++;
	free(f->recs[i].val);
	snprintf(f->recs[i].key, sizeof f->recs[i].key, "%s", k);
	f->recs[i].val = malloc(l ? l : 1);
	memcpy(f->recs[i].val, v, l);
	f->recs[i].len = l;
out:
	pthread_mutex_unlock(&f->lock);
	return r;
}

static int h_state_get(void *ctx, const char *k, unsigned char **v, size_t *l)
{
	return rec_get(ctx, k, v, l);
}

static int h_state_put(void *ctx, const char *k, const unsigned char *v, size_t l)
{
	return rec_put(ctx, k, v, l);
}

static int h_job_get(struct fg_job *j, const char *k, unsigned char **v, size_t *l)
{
	char key[160];
	snprintf(key, sizeof key, "%s/%s", j->id, k);
	return rec_get(j->f, key, v, l);
}

static int h_job_put(struct fg_job *j, const char *k, const unsigned char *v, size_t l)
{
	char key[160];
	if (j->f->fail_job_put)
		return -1;
	snprintf(key, sizeof key, "%s/%s", j->id, k);
	return rec_put(j->f, key, v, l);
}

static int h_serial_reserve(void *ctx, const char *s)
{
	struct fake *f = ctx;
	int r = 0;
	pthread_mutex_lock(&f->lock);
	f->reserve_calls++;
	if (f->fail_reserve) {
		r = -1;
		goto out;
	}
	if (f->taken_next > 0) {
		f->taken_next--;
		r = 1;
		goto out;
	}
	for (int i = 0; i < f->nserials; i++)
		if (strcmp(f->serials[i], s) == 0) {
			r = 1;
			goto out;
		}
	if (f->nserials == MAXREC) {
		r = -1;
		goto out;
	}
	snprintf(f->serials[f->nserials++], sizeof f->serials[0], "%s", s);
out:
	pthread_mutex_unlock(&f->lock);
	return r;
}

static struct fg_host host = {
	.abi_version = FG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct fg_host),
	.log = h_log,
	.now = h_now,
	.random = h_random,
	.state_get = h_state_get,
	.state_put = h_state_put,
	.job_get = h_job_get,
	.job_put = h_job_put,
	.serial_reserve = h_serial_reserve,
};

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Each test gets a fresh host state and a fresh temporary state dir. */
static int setup(void **state)
{
	(void)state;
	fk = calloc(1, sizeof *fk);
	if (fk == NULL)
		return -1;
	pthread_mutex_init(&fk->lock, NULL);
	fk->now = (int64_t)time(NULL);
	host.ctx = fk;
	snprintf(dir, sizeof dir, "/tmp/fg-localca.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < fk->nrecs; i++)
		free(fk->recs[i].val);
	pthread_mutex_destroy(&fk->lock);
	free(fk);
	fk = NULL;
	return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int group_setup(void **state)
{
	char path[1024];
	const char *bd = getenv("FG_PLUGIN_DIR_BUILD");
	(void)state;
	snprintf(path, sizeof path, "%s/fleetgate-local.so", bd ? bd : "plugins/local");
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
		return -1;
	}
	fg_backend_entry_fn entry;
	*(void **)&entry = dlsym(dl, FG_BACKEND_SYMBOL);
	ops = entry ? entry() : NULL;
	return ops ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	return dlclose(dl);
}

/* Open a CA in <dir>/<sub>; extra settings may be NULL. */
static void *open_ca(const char *sub, const char *key_type, int create, const char *validity,
		     char *err, size_t errlen)
{
	struct fg_kv s[6] = {
		{ "state_dir", dir }, { "name", "local" }, { "ca_dir", sub },
		{ "create", create ? "yes" : "no" },
	};
	size_t n = 4;
	void *st = NULL;

	if (key_type)
		s[n++] = (struct fg_kv){ "key_type", key_type };
	if (validity)
		s[n++] = (struct fg_kv){ "ca_validity", validity };
	err[0] = '\0';
	if (ops->open(&host, s, n, &st, err, errlen) != 0) {
		assert_null(st);
		return NULL;
	}
	return st;
}

static X509 *der_cert(const unsigned char *der, size_t len)
{
	const unsigned char *p = der;
	X509 *x = d2i_X509(NULL, &p, (long)len);
	assert_non_null(x);
	assert_ptr_equal(p, der + len);
	return x;
}

static X509 *ca_cert(void *ca)
{
	char err[256];
	struct fg_cert_list cl;
	assert_int_equal(ops->cacerts(ca, &cl, err, sizeof err), 0);
	assert_int_equal(cl.n, 1);
	X509 *x = der_cert(cl.der[0], cl.len[0]);
	fg_cert_list_clear(&cl);
	return x;
}

/* A PKCS#10 request for a fresh key of the given curve, naming things the
 * CA must ignore (names come from the issue request). */
static unsigned char *make_csr(const char *curve, size_t *len, EVP_PKEY **keyp)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
	X509_REQ *rq = X509_REQ_new();
	X509V3_CTX ctx;
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	unsigned char *der = NULL;

	assert_non_null(k);
	assert_non_null(rq);
	assert_int_equal(X509_REQ_set_pubkey(rq, k), 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(rq), "CN", MBSTRING_UTF8,
						    (const unsigned char *)"csr-name", -1, -1, 0), 1);
	X509V3_set_ctx(&ctx, NULL, NULL, rq, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "DNS:csr.example");
	assert_non_null(e);
	sk_X509_EXTENSION_push(exts, e);
	assert_int_equal(X509_REQ_add_extensions(rq, exts), 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	assert_true(X509_REQ_sign(rq, k, EVP_sha256()) > 0);
	int n = i2d_X509_REQ(rq, &der);
	assert_true(n > 0);
	*len = (size_t)n;
	X509_REQ_free(rq);
	if (keyp)
		*keyp = k;
	else
		EVP_PKEY_free(k);
	return der;
}

static const char *dns_names[] = { "host1.example.com", "www.example.com" };
static const char *ip_names[] = { "192.0.2.7", "2001:db8::1" };
static const char *email_names[] = { "ops@example.com" };
static const char *ekus[] = { "clientAuth", "serverAuth", "1.3.6.1.5.5.7.3.17" };

static void request(struct fg_issue_request *r, struct fg_job *job, const unsigned char *csr, size_t len)
{
	memset(r, 0, sizeof *r);
	r->struct_size = sizeof *r;
	r->request_id = job->id;
	r->device_id = "dev_1";
	r->slot = "default";
	r->job = job;
	r->csr_der = csr;
	r->csr_len = len;
	r->subject_cn = "host1";
	r->dns_names = dns_names;
	r->n_dns = 2;
	r->ip_names = ip_names;
	r->n_ip = 2;
	r->emails = email_names;
	r->n_email = 1;
	r->not_before = fk->now - 60;
	r->not_after = fk->now + 86400LL * 365 * 20;   /* beyond the CA's 10 years: clamped */
	r->key_usage = FG_KU_DIGITAL_SIGNATURE | FG_KU_KEY_AGREEMENT;
	r->ext_key_usage = ekus;
	r->n_eku = 3;
	r->profile = "default";
}

static int64_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;
	assert_int_equal(ASN1_TIME_to_tm(t, &tm), 1);
	return (int64_t)timegm(&tm);
}

static const X509_EXTENSION *ext(X509 *x, int nid)
{
	int i = X509_get_ext_by_NID(x, nid, -1);
	assert_true(i >= 0);
	assert_int_equal(X509_get_ext_by_NID(x, nid, i), -1);   /* exactly once */
	return X509_get_ext(x, i);
}

static int issue(void *ca, const struct fg_issue_request *r, struct fg_issue_result *res)
{
	assert_int_equal(ops->issue(ca, r, res), 0);
	return (int)res->status;
}

static void test_create_and_reopen(void **state)
{
	char err[512], path[256];
	struct stat sb;
	(void)state;

	assert_null(open_ca("ca", NULL, 0, NULL, err, sizeof err));
	assert_non_null(strstr(err, "no CA in"));
	assert_non_null(strstr(err, "fleetgate init"));

	void *ca = open_ca("ca", NULL, 1, "2y", err, sizeof err);
	assert_non_null(ca);
	snprintf(path, sizeof path, "%s/ca/ca.key", dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char line[64] = "";
	assert_non_null(fgets(line, sizeof line, f));
	assert_string_equal(line, "-----BEGIN PRIVATE KEY-----\n");   /* PKCS#8 */
	rewind(f);
	EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(key);
	assert_true(EVP_PKEY_is_a(key, "EC"));
	assert_int_equal(EVP_PKEY_get_bits(key), 256);
	snprintf(path, sizeof path, "%s/ca/ca.crt", dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0644);

	/* The CA certificate. */
	X509 *cert = ca_cert(ca);
	assert_int_equal(X509_check_private_key(cert, key), 1);
	assert_int_equal(X509_verify(cert, key), 1);
	assert_int_equal(X509_get_version(cert), X509_VERSION_3);
	assert_int_equal(X509_check_ca(cert), 1);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)), 0);
	char buf[128];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf) > 0);
	assert_string_equal(buf, "fleetgate local CA");
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_organizationName, buf, sizeof buf) > 0);
	assert_string_equal(buf, "fleetgate");
	assert_true(X509_EXTENSION_get_critical(ext(cert, NID_basic_constraints)));
	BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(cert, NID_basic_constraints, NULL, NULL);
	assert_non_null(bc);
	assert_true(bc->ca);
	assert_non_null(bc->pathlen);
	assert_int_equal(ASN1_INTEGER_get(bc->pathlen), 0);
	BASIC_CONSTRAINTS_free(bc);
	assert_true(X509_EXTENSION_get_critical(ext(cert, NID_key_usage)));
	assert_int_equal(X509_get_key_usage(cert), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_non_null(X509_get0_subject_key_id(cert));
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_subject_key_id(cert), X509_get0_authority_key_id(cert)), 0);
	assert_int_equal(X509_get_signature_nid(cert), NID_ecdsa_with_SHA256);
	int64_t span = asn1_time(X509_get0_notAfter(cert)) - fk->now;
	assert_true(span > 2 * 365 * 86400LL - 120 && span <= 2 * 365 * 86400LL);
	ops->close(ca);

	/* Reopening, with or without create, uses the same CA. */
	for (int create = 0; create < 2; create++) {
		ca = open_ca("ca", "p384", create, NULL, err, sizeof err);
		assert_non_null(ca);
		X509 *again = ca_cert(ca);
		assert_int_equal(X509_cmp(cert, again), 0);
		X509_free(again);
		ops->close(ca);
	}
	X509_free(cert);
	EVP_PKEY_free(key);

	/* Settings errors. */
	assert_null(open_ca("ca2", NULL, 1, "ten years", err, sizeof err));
	assert_non_null(strstr(err, "ca_validity"));
	assert_null(open_ca("ca2", "dsa1024", 1, NULL, err, sizeof err));
	assert_non_null(strstr(err, "key_type"));
	struct fg_kv rel[] = { { "state_dir", "relative/dir" }, { "create", "yes" } };
	void *st = NULL;
	assert_int_equal(ops->open(&host, rel, 2, &st, err, sizeof err), -1);
	assert_non_null(strstr(err, "state_dir"));
	struct fg_host old = host;
	old.abi_version = FG_PLUGIN_ABI_VERSION + 1;
	struct fg_kv ok[] = { { "state_dir", dir } };
	assert_int_equal(ops->open(&old, ok, 1, &st, err, sizeof err), -1);
	assert_non_null(strstr(err, "ABI"));
}

static void test_issue_contents(void **state)
{
	char err[512];
	size_t len;
	EVP_PKEY *leafkey;
	(void)state;

	void *ca = open_ca("ca", NULL, 1, NULL, err, sizeof err);
	assert_non_null(ca);
	X509 *cacert = ca_cert(ca);
	unsigned char *csr = make_csr("P-256", &len, &leafkey);
	struct fg_job job = { fk, "job-one" };
	struct fg_issue_request r;
	struct fg_issue_result res;
	request(&r, &job, csr, len);
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_OK);

	/* The chain is the CA certificate. */
	assert_int_equal(res.n_chain, 1);
	X509 *chain0 = der_cert(res.chain_der[0], res.chain_len[0]);
	assert_int_equal(X509_cmp(chain0, cacert), 0);
	X509_free(chain0);

	X509 *leaf = der_cert(res.cert_der, res.cert_len);
	assert_int_equal(X509_verify(leaf, X509_get0_pubkey(cacert)), 1);
	assert_int_equal(X509_check_issued(cacert, leaf), X509_V_OK);
	assert_int_equal(X509_get_signature_nid(leaf), NID_ecdsa_with_SHA256);
	assert_int_equal(X509_get_version(leaf), X509_VERSION_3);
	assert_int_equal(X509_check_private_key(leaf, leafkey), 1);   /* the CSR's key */

	/* Subject: the CN asked for, nothing from the CSR. */
	X509_NAME *subj = X509_get_subject_name(leaf);
	assert_int_equal(X509_NAME_entry_count(subj), 1);
	char cn[64];
	assert_true(X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof cn) > 0);
	assert_string_equal(cn, "host1");
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(cacert)), 0);

	/* basicConstraints critical CA:FALSE. */
	assert_true(X509_EXTENSION_get_critical(ext(leaf, NID_basic_constraints)));
	assert_int_equal(X509_check_ca(leaf), 0);

	/* keyUsage critical, exactly as asked. */
	assert_true(X509_EXTENSION_get_critical(ext(leaf, NID_key_usage)));
	assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT);

	/* extendedKeyUsage: the two names and the dotted OID, in order. */
	EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(leaf, NID_ext_key_usage, NULL, NULL);
	assert_non_null(eku);
	assert_int_equal(sk_ASN1_OBJECT_num(eku), 3);
	assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_client_auth);
	assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 1)), NID_server_auth);
	char oid[64];
	OBJ_obj2txt(oid, sizeof oid, sk_ASN1_OBJECT_value(eku, 2), 1);
	assert_string_equal(oid, "1.3.6.1.5.5.7.3.17");
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);

	/* subjectAltName: DNS, IP (v4 and v6) and email from the request, not
	 * critical (the subject is not empty), none from the CSR. */
	assert_false(X509_EXTENSION_get_critical(ext(leaf, NID_subject_alt_name)));
	assert_int_equal(X509_check_host(leaf, "host1.example.com", 0, 0, NULL), 1);
	assert_int_equal(X509_check_host(leaf, "www.example.com", 0, 0, NULL), 1);
	assert_int_equal(X509_check_host(leaf, "csr.example", 0, 0, NULL), 0);
	assert_int_equal(X509_check_ip_asc(leaf, "192.0.2.7", 0), 1);
	assert_int_equal(X509_check_ip_asc(leaf, "2001:db8::1", 0), 1);
	assert_int_equal(X509_check_email(leaf, "ops@example.com", 0, 0), 1);
	GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 5);
	GENERAL_NAMES_free(gens);

	/* Key identifiers: SKI of the leaf's key, AKI = the CA's SKI. */
	assert_non_null(X509_get0_subject_key_id(leaf));
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf),
					       X509_get0_subject_key_id(cacert)), 0);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	assert_int_equal(X509_pubkey_digest(leaf, EVP_sha1(), md, &mdlen), 1);
	assert_int_equal(ASN1_STRING_length(X509_get0_subject_key_id(leaf)), (int)mdlen);
	assert_memory_equal(ASN1_STRING_get0_data(X509_get0_subject_key_id(leaf)), md, mdlen);

	/* Serial: positive, at least 64 bits, at most 20 octets, reserved. */
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
	assert_false(BN_is_negative(bn));
	assert_true(BN_num_bits(bn) >= 64);
	assert_true(BN_num_bytes(bn) <= 20);
	unsigned char *sder = NULL;
	int slen = i2d_ASN1_INTEGER((ASN1_INTEGER *)X509_get0_serialNumber(leaf), &sder);
	assert_true(slen - 2 <= 20);   /* content octets of the DER INTEGER */
	OPENSSL_free(sder);
	char *hex = BN_bn2hex(bn);
	assert_int_equal(fk->nserials, 1);
	assert_string_equal(fk->serials[0], hex);
	OPENSSL_free(hex);
	BN_free(bn);

	/* Validity: notBefore as asked, notAfter clamped to the CA's. */
	assert_int_equal(asn1_time(X509_get0_notBefore(leaf)), r.not_before);
	assert_int_equal(asn1_time(X509_get0_notAfter(leaf)), asn1_time(X509_get0_notAfter(cacert)));

	/* A window inside the CA's stays as asked. */
	struct fg_job job2 = { fk, "job-short" };
	struct fg_issue_result res2;
	request(&r, &job2, csr, len);
	r.not_after = fk->now + 86400 * 30;
	assert_int_equal(issue(ca, &r, &res2), FG_ISSUE_OK);
	X509 *shortx = der_cert(res2.cert_der, res2.cert_len);
	assert_int_equal(asn1_time(X509_get0_notAfter(shortx)), r.not_after);
	X509_free(shortx);
	fg_issue_result_clear(&res2);

	X509_free(leaf);
	X509_free(cacert);
	EVP_PKEY_free(leafkey);
	fg_issue_result_clear(&res);
	OPENSSL_free(csr);
	ops->close(ca);
}

/* TBS bytes of a certificate. */
static unsigned char *tbs_of(X509 *x, int *len)
{
	unsigned char *der = NULL;
	*len = i2d_re_X509_tbs(x, &der);
	assert_true(*len > 0);
	return der;
}

static void test_write_ahead_resume(void **state)
{
	char err[512];
	size_t len;
	(void)state;

	void *ca = open_ca("ca", NULL, 1, NULL, err, sizeof err);
	assert_non_null(ca);
	X509 *cacert = ca_cert(ca);
	unsigned char *csr = make_csr("P-256", &len, NULL);
	struct fg_job job = { fk, "job-resume" };
	struct fg_issue_request r;
	struct fg_issue_result a, b, c;
	request(&r, &job, csr, len);

	/* The record is written before the signature and holds the TBS. */
	assert_int_equal(issue(ca, &r, &a), FG_ISSUE_OK);
	unsigned char *rec = NULL;
	size_t reclen = 0;
	assert_int_equal(h_job_get(&job, "tbs", &rec, &reclen), 1);
	X509 *unsigned_x = der_cert(rec, reclen);
	free(rec);
	X509 *x1 = der_cert(a.cert_der, a.cert_len);
	int l0, l1, l2;
	unsigned char *t0 = tbs_of(unsigned_x, &l0), *t1 = tbs_of(x1, &l1);
	assert_int_equal(l0, l1);
	assert_memory_equal(t0, t1, (size_t)l0);
	assert_int_equal(fk->reserve_calls, 1);

	/* The same job again: no new serial, the same TBS, a valid signature
	 * (ECDSA signatures differ each time). */
	assert_int_equal(issue(ca, &r, &b), FG_ISSUE_OK);
	X509 *x2 = der_cert(b.cert_der, b.cert_len);
	unsigned char *t2 = tbs_of(x2, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(t1, t2, (size_t)l1);
	assert_int_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(x1), X509_get0_serialNumber(x2)), 0);
	assert_int_equal(X509_verify(x2, X509_get0_pubkey(cacert)), 1);
	assert_int_equal(fk->reserve_calls, 1);

	/* Resuming signs the recorded TBS even if the request differs (the
	 * host normally passes the same one): the record is the truth. */
	r.subject_cn = "someone-else";
	r.n_dns = 0;
	assert_int_equal(issue(ca, &r, &c), FG_ISSUE_OK);
	X509 *x3 = der_cert(c.cert_der, c.cert_len);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x1), X509_get_subject_name(x3)), 0);
	assert_int_equal(X509_check_host(x3, "host1.example.com", 0, 0, NULL), 1);
	assert_int_equal(fk->reserve_calls, 1);

	/* A record from another CA is refused, not signed. */
	void *other = open_ca("other", NULL, 1, NULL, err, sizeof err);
	assert_non_null(other);
	struct fg_issue_result d;
	assert_int_equal(issue(other, &r, &d), FG_ISSUE_REJECTED);
	assert_null(d.cert_der);
	assert_non_null(strstr(d.message, "another CA"));
	fg_issue_result_clear(&d);
	ops->close(other);

	/* A failed write-ahead: nothing is signed, the error is transient. */
	struct fg_job job2 = { fk, "job-noput" };
	request(&r, &job2, csr, len);
	fk->fail_job_put = 1;
	assert_int_equal(issue(ca, &r, &d), FG_ISSUE_ERROR);
	assert_null(d.cert_der);
	assert_true(d.retry_after > 0);
	assert_non_null(strstr(d.message, "nothing was signed"));
	fg_issue_result_clear(&d);
	fk->fail_job_put = 0;

	OPENSSL_free(t0);
	OPENSSL_free(t1);
	OPENSSL_free(t2);
	X509_free(unsigned_x);
	X509_free(x1);
	X509_free(x2);
	X509_free(x3);
	X509_free(cacert);
	fg_issue_result_clear(&a);
	fg_issue_result_clear(&b);
	fg_issue_result_clear(&c);
	OPENSSL_free(csr);
	ops->close(ca);
}

static void test_serials(void **state)
{
	char err[512];
	size_t len;
	(void)state;

	void *ca = open_ca("ca", NULL, 1, NULL, err, sizeof err);
	assert_non_null(ca);
	unsigned char *csr = make_csr("P-256", &len, NULL);
	struct fg_issue_request r;
	struct fg_issue_result res;

	/* A taken serial makes the CA draw another. */
	struct fg_job j1 = { fk, "job-taken" };
	request(&r, &j1, csr, len);
	fk->taken_next = 1;
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_OK);
	assert_int_equal(fk->reserve_calls, 2);
	assert_int_equal(fk->nserials, 1);
	X509 *x = der_cert(res.cert_der, res.cert_len);
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = BN_bn2hex(bn);
	assert_string_equal(hex, fk->serials[0]);
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(x);
	fg_issue_result_clear(&res);

	/* Always taken: a transient error after a bounded number of draws. */
	struct fg_job j2 = { fk, "job-alltaken" };
	request(&r, &j2, csr, len);
	fk->taken_next = 1000;
	fk->reserve_calls = 0;
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_ERROR);
	assert_int_equal(fk->reserve_calls, 5);
	assert_non_null(strstr(res.message, "serial"));
	fg_issue_result_clear(&res);
	fk->taken_next = 0;
	fk->fail_reserve = 1;
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_ERROR);
	fg_issue_result_clear(&res);
	fk->fail_reserve = 0;

	/* 200 jobs, 200 distinct serials (the fake host answers "taken" for a
	 * repeat, and counts reservations). */
	fk->reserve_calls = 0;
	for (int i = 0; i < 200; i++) {
		struct fg_job j = { fk, "" };
		snprintf(j.id, sizeof j.id, "job-many-%d", i);
		request(&r, &j, csr, len);
		assert_int_equal(issue(ca, &r, &res), FG_ISSUE_OK);
		fg_issue_result_clear(&res);
	}
	assert_int_equal(fk->nserials, 201);
	assert_int_equal(fk->reserve_calls, 200);   /* no repeat was ever drawn */
	OPENSSL_free(csr);
	ops->close(ca);
}

struct worker_arg {
	void *ca;
	const unsigned char *csr;
	size_t len;
	int index;
	int ok;
};

static void *worker(void *p)
{
	struct worker_arg *a = p;
	for (int i = 0; i < 25; i++) {
		struct fg_job j = { fk, "" };
		struct fg_issue_request r;
		struct fg_issue_result res;
		snprintf(j.id, sizeof j.id, "job-t%d-%d", a->index, i);
		request(&r, &j, a->csr, a->len);
		if (ops->issue(a->ca, &r, &res) == 0 && res.status == FG_ISSUE_OK)
			a->ok++;
		fg_issue_result_clear(&res);
	}
	return NULL;
}

static void test_concurrent_issue(void **state)
{
	char err[512];
	size_t len;
	pthread_t th[4];
	struct worker_arg args[4];
	(void)state;

	void *ca = open_ca("ca", NULL, 1, NULL, err, sizeof err);
	assert_non_null(ca);
	unsigned char *csr = make_csr("P-256", &len, NULL);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct worker_arg){ ca, csr, len, i, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].ok, 25);
	}
	assert_int_equal(fk->nserials, 100);
	OPENSSL_free(csr);
	ops->close(ca);
}

static void test_rejections(void **state)
{
	char err[512];
	size_t len;
	(void)state;

	void *ca = open_ca("ca", NULL, 1, NULL, err, sizeof err);
	assert_non_null(ca);
	unsigned char *csr = make_csr("P-256", &len, NULL);
	struct fg_job j = { fk, "job-rej" };
	struct fg_issue_request r;
	struct fg_issue_result res;

	request(&r, &j, csr, len);
	unsigned char junk[] = { 0x30, 0x03, 0x02, 0x01, 0x05 };
	r.csr_der = junk;
	r.csr_len = sizeof junk;
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_REJECTED);
	assert_non_null(strstr(res.message, "CSR"));
	fg_issue_result_clear(&res);

	request(&r, &j, csr, len);
	r.subject_cn = "";
	r.n_dns = r.n_ip = r.n_email = 0;
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_REJECTED);
	assert_non_null(strstr(res.message, "names nothing"));
	fg_issue_result_clear(&res);

	static const char *bad_ip[] = { "300.1.2.3" };
	request(&r, &j, csr, len);
	r.ip_names = bad_ip;
	r.n_ip = 1;
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_REJECTED);
	assert_non_null(strstr(res.message, "300.1.2.3"));
	fg_issue_result_clear(&res);

	static const char *bad_eku[] = { "sha256" };
	request(&r, &j, csr, len);
	r.ext_key_usage = bad_eku;
	r.n_eku = 1;
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_REJECTED);
	assert_non_null(strstr(res.message, "sha256"));
	fg_issue_result_clear(&res);

	request(&r, &j, csr, len);
	r.not_before = fk->now + 86400LL * 365 * 11;   /* after the CA expires */
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_REJECTED);
	fg_issue_result_clear(&res);

	/* No reservation or record was made for any of them. */
	assert_int_equal(fk->reserve_calls, 0);
	assert_int_equal(fk->nrecs, 0);

	/* Without a CN the subject is empty and the SAN critical. */
	request(&r, &j, csr, len);
	r.subject_cn = "";
	r.n_eku = 0;
	r.key_usage = 0;
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_OK);
	X509 *x = der_cert(res.cert_der, res.cert_len);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
	assert_true(X509_EXTENSION_get_critical(ext(x, NID_subject_alt_name)));
	assert_int_equal(X509_get_ext_by_NID(x, NID_key_usage, -1), -1);
	assert_int_equal(X509_get_ext_by_NID(x, NID_ext_key_usage, -1), -1);
	X509_free(x);
	fg_issue_result_clear(&res);
	OPENSSL_free(csr);
	ops->close(ca);
}

static void test_revoke(void **state)
{
	char err[512];
	size_t len;
	(void)state;

	void *ca = open_ca("ca", NULL, 1, NULL, err, sizeof err);
	void *other = open_ca("other", NULL, 1, NULL, err, sizeof err);
	assert_non_null(ca);
	assert_non_null(other);
	unsigned char *csr = make_csr("P-256", &len, NULL);
	struct fg_job j = { fk, "job-rev" }, j2 = { fk, "job-rev2" };
	struct fg_issue_request r;
	struct fg_issue_result res, res2;
	request(&r, &j, csr, len);
	assert_int_equal(issue(ca, &r, &res), FG_ISSUE_OK);
	request(&r, &j2, csr, len);
	assert_int_equal(issue(other, &r, &res2), FG_ISSUE_OK);

	fk->now += 100;
	assert_int_equal(ops->revoke(ca, res.cert_der, res.cert_len, FG_REVOKE_KEY_COMPROMISE, err, sizeof err), 0);
	char key[96], want[64];
	snprintf(key, sizeof key, "revoked:%s", fk->serials[0]);
	snprintf(want, sizeof want, "1 %lld", (long long)fk->now);
	unsigned char *val = NULL;
	size_t vlen = 0;
	assert_int_equal(h_state_get(fk, key, &val, &vlen), 1);
	assert_int_equal(vlen, strlen(want));
	assert_memory_equal(val, want, vlen);
	free(val);

	/* Not ours, or not a certificate: refused. */
	assert_int_equal(ops->revoke(ca, res2.cert_der, res2.cert_len, FG_REVOKE_UNSPECIFIED, err, sizeof err), -1);
	assert_non_null(strstr(err, "not issued by"));
	assert_int_equal(ops->revoke(ca, csr, len, FG_REVOKE_UNSPECIFIED, err, sizeof err), -1);
	fg_issue_result_clear(&res);
	fg_issue_result_clear(&res2);
	OPENSSL_free(csr);
	ops->close(ca);
	ops->close(other);
}

static void test_other_ca_types(void **state)
{
	char err[512];
	(void)state;
	static const struct { const char *type; int sig_nid; const char *curve; } t[] = {
		{ "p384", NID_ecdsa_with_SHA384, "P-384" },
		{ "rsa3072", NID_sha256WithRSAEncryption, "P-256" },
	};

	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		void *ca = open_ca(t[i].type, t[i].type, 1, NULL, err, sizeof err);
		assert_non_null(ca);
		X509 *cacert = ca_cert(ca);
		assert_int_equal(X509_get_signature_nid(cacert), t[i].sig_nid);
		size_t len;
		unsigned char *csr = make_csr(t[i].curve, &len, NULL);
		struct fg_job job = { fk, "" };
		snprintf(job.id, sizeof job.id, "job-%s", t[i].type);
		struct fg_issue_request r;
		struct fg_issue_result res, again;
		request(&r, &job, csr, len);
		assert_int_equal(issue(ca, &r, &res), FG_ISSUE_OK);
		X509 *leaf = der_cert(res.cert_der, res.cert_len);
		assert_int_equal(X509_verify(leaf, X509_get0_pubkey(cacert)), 1);
		assert_int_equal(X509_get_signature_nid(leaf), t[i].sig_nid);
		/* Resume works with these keys too. */
		assert_int_equal(issue(ca, &r, &again), FG_ISSUE_OK);
		X509 *leaf2 = der_cert(again.cert_der, again.cert_len);
		assert_int_equal(X509_verify(leaf2, X509_get0_pubkey(cacert)), 1);
		assert_int_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(leaf), X509_get0_serialNumber(leaf2)), 0);
		X509_free(leaf2);
		X509_free(leaf);
		X509_free(cacert);
		fg_issue_result_clear(&res);
		fg_issue_result_clear(&again);
		OPENSSL_free(csr);
		ops->close(ca);
	}
}

/* ---- CRL and OCSP (make_crl, ocsp_respond) ---- */

/* Open a CA in <dir>/<sub> (created) with extra settings. */
static void *open_ca_with(const char *sub, const struct fg_kv *extra, size_t nextra, char *err,
			  size_t errlen)
{
	struct fg_kv s[12] = {
		{ "state_dir", dir }, { "name", "local" }, { "ca_dir", sub }, { "create", "yes" },
	};
	size_t n = 4;
	void *st = NULL;

	for (size_t i = 0; i < nextra && n < 12; i++)
		s[n++] = extra[i];
	err[0] = '\0';
	if (ops->open(&host, s, n, &st, err, errlen) != 0)
		return NULL;
	return st;
}

/* Issue one certificate for job id; the result's DER is the caller's. */
static X509 *issue_one(void *ca, const char *id, struct fg_issue_result *res)
{
	size_t len;
	unsigned char *csr = make_csr("P-256", &len, NULL);
	struct fg_job j = { fk, "" };
	struct fg_issue_request r;

	snprintf(j.id, sizeof j.id, "%s", id);
	request(&r, &j, csr, len);
	assert_int_equal(issue(ca, &r, res), FG_ISSUE_OK);
	OPENSSL_free(csr);
	return der_cert(res->cert_der, res->cert_len);
}

static char *hex_serial(X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *h = BN_bn2hex(bn);
	BN_free(bn);
	return h;       /* OPENSSL_free */
}

static X509_CRL *make_crl(void *ca, const struct fg_revoked *l, size_t n, int64_t now)
{
	char err[512];
	unsigned char *der = NULL;
	size_t len = 0;

	assert_int_equal(ops->make_crl(ca, l, n, now, &der, &len, err, sizeof err), 0);
	const unsigned char *p = der;
	X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);
	assert_non_null(crl);
	assert_ptr_equal(p, der + len);
	free(der);
	return crl;
}

static long crl_number(X509_CRL *crl)
{
	ASN1_INTEGER *n = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	assert_non_null(n);
	long v = ASN1_INTEGER_get(n);
	ASN1_INTEGER_free(n);
	return v;
}

static void test_make_crl(void **state)
{
	char err[512];
	struct fg_issue_result r1, r2;
	(void)state;

	void *ca = open_ca("ca", NULL, 1, NULL, err, sizeof err);
	assert_non_null(ca);
	X509 *cacert = ca_cert(ca);
	X509 *a = issue_one(ca, "crl-a", &r1), *b = issue_one(ca, "crl-b", &r2);
	char *sa = hex_serial(a), *sb = hex_serial(b);
	/* a is revoked through the plugin (its record gives keyCompromise);
	 * b only in the host's store: no record, reason unspecified. */
	assert_int_equal(ops->revoke(ca, r1.cert_der, r1.cert_len, FG_REVOKE_KEY_COMPROMISE, err, sizeof err), 0);
	struct fg_revoked list[2] = { { sa, fk->now - 50 }, { sb, fk->now - 10 } };

	X509_CRL *crl = make_crl(ca, list, 2, fk->now);
	assert_int_equal(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
	assert_int_equal(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(cacert)), 0);
	assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(cacert)), 1);
	assert_int_equal(asn1_time(X509_CRL_get0_lastUpdate(crl)), fk->now);
	assert_int_equal(asn1_time(X509_CRL_get0_nextUpdate(crl)), fk->now + 7 * 86400);   /* default */
	assert_int_equal(crl_number(crl), 1);
	AUTHORITY_KEYID *akid = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, NULL, NULL);
	assert_non_null(akid);
	assert_int_equal(ASN1_OCTET_STRING_cmp(akid->keyid, X509_get0_subject_key_id(cacert)), 0);
	AUTHORITY_KEYID_free(akid);
	assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
	X509_REVOKED *ra = NULL, *rb = NULL;
	assert_int_equal(X509_CRL_get0_by_serial(crl, &ra, X509_get0_serialNumber(a)), 1);
	assert_int_equal(X509_CRL_get0_by_serial(crl, &rb, X509_get0_serialNumber(b)), 1);
	assert_int_equal(asn1_time(X509_REVOKED_get0_revocationDate(ra)), fk->now - 50);
	assert_int_equal(asn1_time(X509_REVOKED_get0_revocationDate(rb)), fk->now - 10);
	ASN1_ENUMERATED *why = X509_REVOKED_get_ext_d2i(ra, NID_crl_reason, NULL, NULL);
	assert_non_null(why);
	assert_int_equal(ASN1_ENUMERATED_get(why), FG_REVOKE_KEY_COMPROMISE);
	ASN1_ENUMERATED_free(why);
	/* RFC 5280 5.3.1: unspecified is left out */
	assert_null(X509_REVOKED_get_ext_d2i(rb, NID_crl_reason, NULL, NULL));
	X509_CRL_free(crl);

	/* The number only grows; an empty CRL is fine. */
	crl = make_crl(ca, NULL, 0, fk->now + 1);
	assert_int_equal(crl_number(crl), 2);
	STACK_OF(X509_REVOKED) *none = X509_CRL_get_REVOKED(crl);
	assert_true(none == NULL || sk_X509_REVOKED_num(none) == 0);
	X509_CRL_free(crl);

	/* A bad serial fails the CRL and burns no number. */
	struct fg_revoked bad = { "XYZ", fk->now };
	unsigned char *der = NULL;
	size_t len = 0;
	assert_int_equal(ops->make_crl(ca, &bad, 1, fk->now, &der, &len, err, sizeof err), -1);
	assert_non_null(strstr(err, "not hex"));
	assert_null(der);
	crl = make_crl(ca, list, 2, fk->now + 2);
	assert_int_equal(crl_number(crl), 3);
	X509_CRL_free(crl);

	/* A damaged number is an error, not a restart from 1. */
	assert_int_equal(h_state_put(fk, "crl_number", (const unsigned char *)"x1", 2), 0);
	assert_int_equal(ops->make_crl(ca, list, 2, fk->now, &der, &len, err, sizeof err), -1);
	assert_non_null(strstr(err, "crl_number"));
	ops->close(ca);

	/* crl_validity decides nextUpdate; nonsense is refused at open. */
	struct fg_kv v[] = { { "crl_validity", "60s" } };
	ca = open_ca_with("ca", v, 1, err, sizeof err);
	assert_non_null(ca);
	assert_int_equal(h_state_put(fk, "crl_number", (const unsigned char *)"41", 2), 0);
	crl = make_crl(ca, list, 2, fk->now);
	assert_int_equal(asn1_time(X509_CRL_get0_nextUpdate(crl)), fk->now + 60);
	assert_int_equal(crl_number(crl), 42);
	X509_CRL_free(crl);
	ops->close(ca);
	struct fg_kv bv[] = { { "crl_validity", "soon" } };
	assert_null(open_ca_with("ca", bv, 1, err, sizeof err));
	assert_non_null(strstr(err, "crl_validity"));

	OPENSSL_free(sa);
	OPENSSL_free(sb);
	X509_free(a);
	X509_free(b);
	X509_free(cacert);
	fg_issue_result_clear(&r1);
	fg_issue_result_clear(&r2);
}

static void test_crl_ocsp_urls(void **state)
{
	char err[512];
	struct fg_issue_result r;
	(void)state;

	struct fg_kv v[] = { { "crl_url", "http://pki.example.com:7780/crl/local.crl" },
			     { "ocsp_url", "http://pki.example.com:7780/ocsp" } };
	void *ca = open_ca_with("ca", v, 2, err, sizeof err);
	assert_non_null(ca);
	X509 *x = issue_one(ca, "urls", &r);
	CRL_DIST_POINTS *cdp = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
	assert_non_null(cdp);
	assert_int_equal(sk_DIST_POINT_num(cdp), 1);
	GENERAL_NAME *g = sk_GENERAL_NAME_value(sk_DIST_POINT_value(cdp, 0)->distpoint->name.fullname, 0);
	assert_int_equal(g->type, GEN_URI);
	assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
			    "http://pki.example.com:7780/crl/local.crl");
	CRL_DIST_POINTS_free(cdp);
	AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(x, NID_info_access, NULL, NULL);
	assert_non_null(aia);
	ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(aia, 0);
	assert_int_equal(OBJ_obj2nid(ad->method), NID_ad_OCSP);
	assert_string_equal((const char *)ASN1_STRING_get0_data(ad->location->d.uniformResourceIdentifier),
			    "http://pki.example.com:7780/ocsp");
	AUTHORITY_INFO_ACCESS_free(aia);
	X509_free(x);
	fg_issue_result_clear(&r);
	ops->close(ca);

	/* Without the settings, neither extension. */
	ca = open_ca("plain", NULL, 1, NULL, err, sizeof err);
	x = issue_one(ca, "nourls", &r);
	assert_int_equal(X509_get_ext_by_NID(x, NID_crl_distribution_points, -1), -1);
	assert_int_equal(X509_get_ext_by_NID(x, NID_info_access, -1), -1);
	X509_free(x);
	fg_issue_result_clear(&r);
	ops->close(ca);

	struct fg_kv bad[] = { { "ocsp_url", "ldap://x" } };
	assert_null(open_ca_with("ca", bad, 1, err, sizeof err));
	assert_non_null(strstr(err, "ocsp_url"));
}

/* The status table of the fake host's store, for ocsp_respond. */
struct status_tab {
	const char *good, *revoked;
	int64_t revoked_at;
	int fail;
	int asked;
};

static int tab_status(void *arg, const char *serial, struct fg_cert_status *out)
{
	struct status_tab *t = arg;
	t->asked++;
	if (t->fail)
		return -1;
	out->state = strcmp(serial, t->good) == 0      ? FG_CERT_GOOD
		     : strcmp(serial, t->revoked) == 0 ? FG_CERT_REVOKED
						       : FG_CERT_UNKNOWN;
	out->revoked_at = t->revoked_at;
	return 0;
}

static int ocsp(void *ca, OCSP_REQUEST *rq, struct status_tab *t, OCSP_RESPONSE **out)
{
	char err[512];
	unsigned char *der = NULL, *resp = NULL;
	size_t rlen = 0;
	int n = i2d_OCSP_REQUEST(rq, &der);
	assert_true(n > 0);
	int r = ops->ocsp_respond(ca, der, (size_t)n, tab_status, t, fk->now, &resp, &rlen, err, sizeof err);
	OPENSSL_free(der);
	*out = NULL;
	if (r == FG_OCSP_ANSWERED) {
		const unsigned char *p = resp;
		*out = d2i_OCSP_RESPONSE(NULL, &p, (long)rlen);
		assert_non_null(*out);
	}
	free(resp);
	return r;
}

static void test_ocsp(void **state)
{
	char err[512];
	struct fg_issue_result r1, r2, r3;
	(void)state;

	void *ca = open_ca("ca", NULL, 1, NULL, err, sizeof err);
	void *other = open_ca("other", NULL, 1, NULL, err, sizeof err);
	assert_non_null(ca);
	assert_non_null(other);
	X509 *cacert = ca_cert(ca), *ocert = ca_cert(other);
	X509 *good = issue_one(ca, "o-good", &r1), *rev = issue_one(ca, "o-rev", &r2);
	X509 *foreign = issue_one(other, "o-other", &r3);
	char *sg = hex_serial(good), *sr = hex_serial(rev);
	assert_int_equal(ops->revoke(ca, r2.cert_der, r2.cert_len, FG_REVOKE_SUPERSEDED, err, sizeof err), 0);
	struct status_tab t = { sg, sr, fk->now - 30, 0, 0 };

	/* good, revoked and a serial never issued, with a nonce */
	OCSP_REQUEST *rq = OCSP_REQUEST_new();
	OCSP_CERTID *idg = OCSP_cert_to_id(NULL, good, cacert), *idr = OCSP_cert_to_id(NULL, rev, cacert);
	ASN1_INTEGER *n1234 = ASN1_INTEGER_new();
	ASN1_INTEGER_set(n1234, 0x1234);
	OCSP_CERTID *idu = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(cacert),
					    X509_get0_pubkey_bitstr(cacert), n1234);
	assert_non_null(OCSP_request_add0_id(rq, OCSP_CERTID_dup(idg)));
	assert_non_null(OCSP_request_add0_id(rq, OCSP_CERTID_dup(idr)));
	assert_non_null(OCSP_request_add0_id(rq, OCSP_CERTID_dup(idu)));
	assert_int_equal(OCSP_request_add1_nonce(rq, NULL, -1), 1);
	OCSP_RESPONSE *resp = NULL;
	assert_int_equal(ocsp(ca, rq, &t, &resp), FG_OCSP_ANSWERED);
	assert_int_equal(OCSP_response_status(resp), OCSP_RESPONSE_STATUS_SUCCESSFUL);
	OCSP_BASICRESP *bs = OCSP_response_get1_basic(resp);
	assert_non_null(bs);
	X509_STORE *store = X509_STORE_new();
	X509_STORE_add_cert(store, cacert);
	assert_int_equal(OCSP_basic_verify(bs, NULL, store, 0), 1);    /* signed by the CA itself */
	assert_int_equal(OCSP_check_nonce(rq, bs), 1);
	int status, reason;
	ASN1_GENERALIZEDTIME *rt, *tu, *nu;
	assert_int_equal(OCSP_resp_find_status(bs, idg, &status, &reason, &rt, &tu, &nu), 1);
	assert_int_equal(status, V_OCSP_CERTSTATUS_GOOD);
	assert_int_equal(asn1_time(tu), fk->now);
	assert_int_equal(asn1_time(nu), fk->now + 3600);
	assert_int_equal(OCSP_resp_find_status(bs, idr, &status, &reason, &rt, &tu, &nu), 1);
	assert_int_equal(status, V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_SUPERSEDED);
	assert_int_equal(asn1_time(rt), fk->now - 30);
	assert_int_equal(OCSP_resp_find_status(bs, idu, &status, &reason, &rt, &tu, &nu), 1);
	assert_int_equal(status, V_OCSP_CERTSTATUS_UNKNOWN);
	assert_int_equal(t.asked, 3);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	OCSP_REQUEST_free(rq);

	/* Another CA's certificate: not ours, the host asks elsewhere. */
	rq = OCSP_REQUEST_new();
	OCSP_request_add0_id(rq, OCSP_cert_to_id(NULL, foreign, ocert));
	assert_int_equal(ocsp(ca, rq, &t, &resp), FG_OCSP_NOT_MINE);
	/* The store failing: internalError, never a guess. */
	OCSP_request_add0_id(rq, OCSP_CERTID_dup(idg));
	t.fail = 1;
	assert_int_equal(ocsp(ca, rq, &t, &resp), FG_OCSP_ANSWERED);
	assert_int_equal(OCSP_response_status(resp), OCSP_RESPONSE_STATUS_INTERNALERROR);
	OCSP_RESPONSE_free(resp);
	OCSP_REQUEST_free(rq);

	/* Garbage: malformedRequest. */
	unsigned char junk[] = "junk";
	unsigned char *out = NULL;
	size_t olen = 0;
	assert_int_equal(ops->ocsp_respond(ca, junk, 4, tab_status, &t, fk->now, &out, &olen, err, sizeof err),
			 FG_OCSP_ANSWERED);
	const unsigned char *p = out;
	resp = d2i_OCSP_RESPONSE(NULL, &p, (long)olen);
	assert_int_equal(OCSP_response_status(resp), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	OCSP_RESPONSE_free(resp);
	free(out);

	X509_STORE_free(store);
	OCSP_CERTID_free(idg);
	OCSP_CERTID_free(idr);
	OCSP_CERTID_free(idu);
	ASN1_INTEGER_free(n1234);
	OPENSSL_free(sg);
	OPENSSL_free(sr);
	X509_free(good);
	X509_free(rev);
	X509_free(foreign);
	X509_free(cacert);
	X509_free(ocert);
	fg_issue_result_clear(&r1);
	fg_issue_result_clear(&r2);
	fg_issue_result_clear(&r3);
	ops->close(ca);
	ops->close(other);
}

static void test_symbols(void **state)
{
	(void)state;
	/* Only the entry point is exported. */
	assert_non_null(dlsym(dl, "fg_backend_v1"));
	assert_null(dlsym(dl, "ca_issue"));
	assert_null(dlsym(dl, "local_ops"));
	assert_int_equal(ops->abi_version, FG_PLUGIN_ABI_VERSION);
	assert_int_equal(ops->struct_size, sizeof(struct fg_backend_ops));
	assert_string_equal(ops->name, "local");
	assert_null(ops->poll);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_symbols),
		cmocka_unit_test_setup_teardown(test_create_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_issue_contents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_ahead_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serials, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_issue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_revoke, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_ca_types, setup, teardown),
		cmocka_unit_test_setup_teardown(test_make_crl, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crl_ocsp_urls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ocsp, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
