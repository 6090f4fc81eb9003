/*
 * Unit tests for the signer process (gateway/signer.c) and its client:
 * the issuance boundary enforced by the signer itself, asked through the
 * IPC protocol as a compromised daemon would ask (a CA certificate, a
 * validity beyond the profile, an unrecorded serial, a serial signed twice,
 * foreign key usages, a CRL of a lifetime the config does not allow,
 * malformed and oversized messages), the confinement the kernel applies to
 * it (no_new_privs, seccomp mode 2, and death by SIGSYS for a forbidden
 * system call), and the local CA plugin signing through it end to end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "backend.h"
#include "config.h"
#include "fg_log.h"
#include "fg_util.h"
#include "signer.h"
#include "signer.pb-c.h"
#include "signer_client.h"
#include "signer_ipc.h"
#include "store.h"

static char dir[64];
static struct gw_config *cfg;
static X509 *ca_cert;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* A state directory as `fleetgate init` makes it: the default config, a
 * store, and a local P-256 CA made through the plugin (create). */
static int setup(void **state)
{
	const char *bd = getenv("FG_PLUGIN_DIR_BUILD");
	char path[PATH_MAX], err[2048];
	(void)state;

	fg_log_init("test_signer", FG_LOG_WARN, FG_LOG_TEXT);
	if (bd == NULL)
		return -1;
	setenv("FLEETGATE_PLUGIN_DIR", bd, 1);
	snprintf(dir, sizeof dir, "/tmp/fg-signer.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	char *text = config_default_text("tcp://127.0.0.1:1");
	snprintf(path, sizeof path, "%s/fleetgated.conf", dir);
	if (text == NULL || fg_write_file_atomic(path, text, strlen(text), 0600, (uid_t)-1, (gid_t)-1, err, sizeof err) != 0)
		return -1;
	free(text);
	if ((cfg = config_load(dir, err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	struct store *st = store_open(cfg->store_path, 1, err, sizeof err);
	struct backends *bs = st ? backends_open(cfg, 1, err, sizeof err) : NULL;
	if (bs == NULL) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	backends_free(bs);
	store_free(st);
	snprintf(path, sizeof path, "%s/ca/ca.crt", dir);
	FILE *f = fopen(path, "r");
	ca_cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	return ca_cert ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(ca_cert);
	config_free(cfg);
	return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- a raw client of the protocol, as a hostile daemon would be ---- */

struct reply {
	int status;                /* Fgsigner__Status of the last item, or -1 */
	char reason[512];
	unsigned char *der;
	size_t len;
	char error[256];           /* Reply.error */
};

/* Send items (kinds, ders, serials) in one request on fd; the result of
 * the last item lands in r. */
static void ask(int fd, size_t n, const int *kinds, const char *profile, unsigned char *const *ders,
		const size_t *lens, const char *const *serials, struct reply *r)
{
	Fgsigner__Item items[4], *ip[4];
	Fgsigner__Request req = FGSIGNER__REQUEST__INIT;
	struct signer_hdr h;
	unsigned char *body, *rb = NULL;
	char err[512];

	memset(r, 0, sizeof *r);
	r->status = -1;
	for (size_t i = 0; i < n; i++) {
		fgsigner__item__init(&items[i]);
		items[i].id = (uint32_t)i + 1;
		items[i].kind = (Fgsigner__Kind)kinds[i];
		items[i].backend = "local";
		items[i].profile = (char *)profile;
		items[i].der.data = ders ? ders[i] : NULL;
		items[i].der.len = lens ? lens[i] : 0;
		items[i].serial = serials ? (char *)serials[i] : "";
		ip[i] = &items[i];
	}
	req.n_items = n;
	req.items = ip;
	size_t blen = fgsigner__request__get_packed_size(&req);
	body = malloc(blen);
	fgsigner__request__pack(&req, body);
	assert_int_equal(signer_ipc_send(fd, SIGNER_MSG_REQUEST, 7, body, blen), 0);
	free(body);
	assert_int_equal(signer_ipc_recv(fd, SIGNER_MSG_MAX, &h, &rb, err, sizeof err), 0);
	assert_int_equal(h.id, 7);
	Fgsigner__Reply *rep = fgsigner__reply__unpack(NULL, h.len, rb);
	assert_non_null(rep);
	if (rep->error)
		snprintf(r->error, sizeof r->error, "%s", rep->error);
	if (rep->n_results > 0) {
		const Fgsigner__Result *last = rep->results[rep->n_results - 1];
		r->status = last->status;
		snprintf(r->reason, sizeof r->reason, "%s", last->reason ? last->reason : "");
		r->der = malloc(last->der.len + 1);
		if (last->der.len > 0)
			memcpy(r->der, last->der.data, last->der.len);
		r->len = last->der.len;
	}
	fgsigner__reply__free_unpacked(rep, NULL);
	free(rb);
}

/* ---- to-be-signed objects ---- */

struct leaf_opts {
	int ca;                    /* basicConstraints CA:TRUE */
	int64_t validity;          /* seconds */
	const char *eku;           /* extended key usage, default clientAuth */
	int keycertsign;
	const char *dns;
	unsigned serial_seed;
	int rsa_bits;              /* certify an RSA key of this size instead of P-256 */
};

/* A leaf of this CA, unsigned: signed with a throwaway P-256 key, which
 * writes the same AlgorithmIdentifier the P-256 CA key signs with. *hex is
 * its serial. */
static unsigned char *make_leaf(const struct leaf_opts *o, size_t *len, char hex[48])
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();
	X509V3_CTX ctx;
	unsigned char sb[16];
	unsigned char *der = NULL;
	time_t now = time(NULL);
	char ext[128];

	fg_random(sb, sizeof sb);
	sb[0] = (unsigned char)((sb[0] & 0x3f) | 0x40);
	sb[1] = (unsigned char)o->serial_seed;
	BIGNUM *bn = BN_bin2bn(sb, sizeof sb, NULL);
	char *h = BN_bn2hex(bn);
	snprintf(hex, 48, "%s", h);
	OPENSSL_free(h);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_set_version(x, X509_VERSION_3);
	X509_set_issuer_name(x, X509_get_subject_name(ca_cert));
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8, (const unsigned char *)"dev1", -1,
				   -1, 0);
	ASN1_TIME_set(X509_getm_notBefore(x), now - 60);
	ASN1_TIME_set(X509_getm_notAfter(x), now + (o->validity ? o->validity : 86400));
	EVP_PKEY *subj = o->rsa_bits ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)o->rsa_bits) : NULL;
	X509_set_pubkey(x, subj ? subj : k);
	EVP_PKEY_free(subj);
	X509V3_set_ctx(&ctx, ca_cert, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, o->ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	e = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage,
				o->keycertsign ? "critical,digitalSignature,keyCertSign" : "critical,digitalSignature");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	e = X509V3_EXT_conf_nid(NULL, &ctx, NID_ext_key_usage, o->eku ? o->eku : "clientAuth");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	snprintf(ext, sizeof ext, "DNS:%s", o->dns ? o->dns : "dev1.example.com");
	e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, ext);
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	e = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	int n = i2d_X509(x, &der);
	assert_true(n > 0);
	*len = (size_t)n;
	X509_free(x);
	EVP_PKEY_free(k);
	return der;
}

/* Ask for one certificate, with its serial reserved first when reserve. */
static void ask_cert(int fd, unsigned char *der, size_t len, const char *hex, int reserve, struct reply *r)
{
	int kinds[2] = { FGSIGNER__KIND__KIND_RESERVE, FGSIGNER__KIND__KIND_CERT };
	unsigned char *ders[2] = { NULL, der };
	size_t lens[2] = { 0, len };
	const char *serials[2] = { hex, "" };
	if (reserve)
		ask(fd, 2, kinds, "default", ders, lens, serials, r);
	else
		ask(fd, 1, kinds + 1, "default", ders + 1, lens + 1, serials + 1, r);
}

static void expect_refused(int fd, const struct leaf_opts *o, int reserve, const char *why)
{
	char hex[48];
	size_t len;
	struct reply r;
	unsigned char *der = make_leaf(o, &len, hex);
	ask_cert(fd, der, len, hex, reserve, &r);
	if (r.status != FGSIGNER__STATUS__STATUS_REFUSED || strstr(r.reason, why) == NULL)
		fail_msg("wanted a refusal with '%s', got status %d reason '%s'", why, r.status, r.reason);
	free(r.der);
	OPENSSL_free(der);
}

/* /proc/PID/status field name's value, as text. */
static void proc_status(pid_t pid, const char *name, char *out, size_t outlen)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	out[0] = 0;
	assert_non_null(f);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':') {
			char *v = line + strlen(name) + 1;
			v += strspn(v, " \t");
			v[strcspn(v, "\n")] = 0;
			snprintf(out, outlen, "%s", v);
		}
	fclose(f);
}

/* The boundary, asked directly as a compromised daemon would. */
static void test_boundary(void **state)
{
	char err[1024], hex[48];
	int fd = -1;
	struct reply r;
	size_t len;
	(void)state;

	pid_t pid = signer_spawn(cfg, 0, &fd, err, sizeof err);
	assert_true(pid > 0);

	/* The algorithm query answers an AlgorithmIdentifier. */
	int k = FGSIGNER__KIND__KIND_ALGORITHM;
	ask(fd, 1, &k, "", NULL, NULL, NULL, &r);
	assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_OK);
	const unsigned char *p = r.der;
	X509_ALGOR *alg = d2i_X509_ALGOR(NULL, &p, (long)r.len);
	assert_non_null(alg);
	X509_ALGOR_free(alg);
	free(r.der);

	/* A good leaf, reserved first, is signed and verifies under the CA. */
	struct leaf_opts good = { 0 };
	unsigned char *der = make_leaf(&good, &len, hex);
	ask_cert(fd, der, len, hex, 1, &r);
	assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_OK);
	p = r.der;
	X509 *x = d2i_X509(NULL, &p, (long)r.len);
	assert_non_null(x);
	assert_int_equal(X509_verify(x, X509_get0_pubkey(ca_cert)), 1);
	X509_free(x);
	free(r.der);

	/* The same record again (a resumed job) is signed again. */
	ask_cert(fd, der, len, hex, 1, &r);
	assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_OK);
	free(r.der);
	OPENSSL_free(der);

	/* Another certificate under that serial is refused. */
	struct leaf_opts other = { .dns = "other.example.com" };
	unsigned char *der2 = make_leaf(&other, &len, hex);
	/* make_leaf drew a new serial: put the first one back by re-encoding
	 * is not possible here, so reuse through the table: reserve the new
	 * serial, sign, then sign a third leaf with that same serial. */
	ask_cert(fd, der2, len, hex, 1, &r);
	assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_OK);
	free(r.der);
	{
		const unsigned char *q = der2;
		X509 *y = d2i_X509(NULL, &q, (long)len);
		EVP_PKEY *kk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		unsigned char *der3 = NULL;
		X509_set_pubkey(y, kk);   /* same serial, other key */
		assert_true(X509_sign(y, kk, EVP_sha256()) > 0);
		int n3 = i2d_X509(y, &der3);
		ask_cert(fd, der3, (size_t)n3, hex, 1, &r);
		assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_REFUSED);
		assert_non_null(strstr(r.reason, "already signed for another certificate"));
		free(r.der);
		OPENSSL_free(der3);
		EVP_PKEY_free(kk);
		X509_free(y);
	}
	OPENSSL_free(der2);

	/* What a compromised daemon cannot get. */
	struct leaf_opts ca = { .ca = 1 };
	expect_refused(fd, &ca, 1, "CA:TRUE");
	struct leaf_opts tenyears = { .validity = 10LL * 365 * 86400 };
	expect_refused(fd, &tenyears, 1, "exceeds profile default");
	expect_refused(fd, &good, 0, "was not recorded write-ahead");
	struct leaf_opts codesign = { .eku = "codeSigning" };
	expect_refused(fd, &codesign, 1, "extended key usage codeSigning is not in profile default");
	struct leaf_opts kcs = { .keycertsign = 1 };
	expect_refused(fd, &kcs, 1, "keyCertSign");
	struct leaf_opts badname = { .dns = "Bad_Name.example.com" };
	expect_refused(fd, &badname, 1, "is not valid");
	struct leaf_opts weak = { .rsa_bits = 1024 };
	expect_refused(fd, &weak, 1, "is not RSA >= 2048");
	{
		/* ... while RSA-2048 passes. */
		struct leaf_opts rsa = { .rsa_bits = 2048 };
		unsigned char *d = make_leaf(&rsa, &len, hex);
		ask_cert(fd, d, len, hex, 1, &r);
		assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_OK);
		free(r.der);
		OPENSSL_free(d);
	}

	/* A profile the config does not have. */
	der = make_leaf(&good, &len, hex);
	{
		int kinds[2] = { FGSIGNER__KIND__KIND_RESERVE, FGSIGNER__KIND__KIND_CERT };
		unsigned char *ders[2] = { NULL, der };
		size_t lens[2] = { 0, len };
		const char *serials[2] = { hex, "" };
		ask(fd, 2, kinds, "anything-goes", ders, lens, serials, &r);
		assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_REFUSED);
		assert_non_null(strstr(r.reason, "not in the signer's configuration"));
		free(r.der);
	}
	OPENSSL_free(der);

	/* A CRL that would live a year (crl_validity is 7 days). */
	{
		X509_CRL *crl = X509_CRL_new();
		EVP_PKEY *kk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		ASN1_INTEGER *num = ASN1_INTEGER_new();
		ASN1_TIME *tu = ASN1_TIME_set(NULL, time(NULL)), *nu = ASN1_TIME_set(NULL, time(NULL) + 365 * 86400);
		unsigned char *cder = NULL;
		ASN1_INTEGER_set(num, 1);
		X509_CRL_set_version(crl, X509_CRL_VERSION_2);
		X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca_cert));
		X509_CRL_set1_lastUpdate(crl, tu);
		X509_CRL_set1_nextUpdate(crl, nu);
		X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0);
		assert_true(X509_CRL_sign(crl, kk, EVP_sha256()) > 0);
		int n = i2d_X509_CRL(crl, &cder);
		int kind = FGSIGNER__KIND__KIND_CRL;
		size_t l = (size_t)n;
		ask(fd, 1, &kind, "", &cder, &l, NULL, &r);
		assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_REFUSED);
		assert_non_null(strstr(r.reason, "exceeds backend local's crl_validity"));
		free(r.der);
		/* The same CRL with a week's lifetime is signed. */
		ASN1_TIME_set(nu, time(NULL) + 7 * 86400);
		X509_CRL_set1_nextUpdate(crl, nu);
		assert_true(X509_CRL_sign(crl, kk, EVP_sha256()) > 0);
		OPENSSL_free(cder);
		cder = NULL;
		l = (size_t)i2d_X509_CRL(crl, &cder);
		ask(fd, 1, &kind, "", &cder, &l, NULL, &r);
		assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_OK);
		p = r.der;
		X509_CRL *back = d2i_X509_CRL(NULL, &p, (long)r.len);
		assert_non_null(back);
		assert_int_equal(X509_CRL_verify(back, X509_get0_pubkey(ca_cert)), 1);
		X509_CRL_free(back);
		free(r.der);
		OPENSSL_free(cder);
		ASN1_TIME_free(tu);
		ASN1_TIME_free(nu);
		ASN1_INTEGER_free(num);
		EVP_PKEY_free(kk);
		X509_CRL_free(crl);
	}

	/* A body that is not a Request is dropped with a reason; the signer
	 * serves on. */
	{
		struct signer_hdr h;
		unsigned char *rb = NULL;
		static const unsigned char junk[] = { 0xff, 0xff, 0xff, 0x01, 0x02 };
		assert_int_equal(signer_ipc_send(fd, SIGNER_MSG_REQUEST, 9, junk, sizeof junk), 0);
		assert_int_equal(signer_ipc_recv(fd, SIGNER_MSG_MAX, &h, &rb, err, sizeof err), 0);
		Fgsigner__Reply *rep = fgsigner__reply__unpack(NULL, h.len, rb);
		assert_non_null(rep);
		assert_non_null(strstr(rep->error, "is not a signer Request"));
		fgsigner__reply__free_unpacked(rep, NULL);
		free(rb);
		ask(fd, 1, &k, "", NULL, NULL, NULL, &r);
		assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_OK);
		free(r.der);
	}

	/* A header announcing more than the cap: the signer closes the
	 * stream without reading the body, and exits (status 2). */
	{
		struct signer_hdr h = { SIGNER_IPC_MAGIC, SIGNER_IPC_VERSION, SIGNER_MSG_REQUEST, 0, 11 };
		int status = 0;
		h.len = SIGNER_MSG_MAX + 1;
		assert_int_equal(write(fd, &h, sizeof h), (ssize_t)sizeof h);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 2);
	}
	close(fd);
}

/* The kernel confines the signer: no_new_privs, seccomp filter mode, and
 * a forbidden system call kills it with SIGSYS. */
static void test_seccomp_kills(void **state)
{
	char err[1024], v[64];
	int fd = -1, status = 0;
	struct reply r;
	int k = FGSIGNER__KIND__KIND_ALGORITHM;
	(void)state;

	pid_t pid = signer_spawn(cfg, SIGNER_TEST_HOOKS, &fd, err, sizeof err);
	assert_true(pid > 0);
	ask(fd, 1, &k, "", NULL, NULL, NULL, &r);      /* it is up and serving */
	assert_int_equal(r.status, FGSIGNER__STATUS__STATUS_OK);
	free(r.der);
	proc_status(pid, "Seccomp", v, sizeof v);
	assert_string_equal(v, "2");
	proc_status(pid, "NoNewPrivs", v, sizeof v);
	assert_string_equal(v, "1");
	if (geteuid() == 0) {
		proc_status(pid, "Uid", v, sizeof v);
		assert_true(strncmp(v, "0\t", 2) != 0);      /* dropped root */
	}
	assert_int_equal(signer_ipc_send(fd, SIGNER_MSG_TEST_FORBIDDEN, 1, NULL, 0), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS)
		fail_msg("the signer should die of SIGSYS; status 0x%x", status);
	close(fd);

	/* Without the test flag the same message is only a bad type. */
	pid = signer_spawn(cfg, 0, &fd, err, sizeof err);
	assert_true(pid > 0);
	{
		struct signer_hdr h;
		unsigned char *rb = NULL;
		assert_int_equal(signer_ipc_send(fd, SIGNER_MSG_TEST_FORBIDDEN, 2, NULL, 0), 0);
		assert_int_equal(signer_ipc_recv(fd, SIGNER_MSG_MAX, &h, &rb, err, sizeof err), 0);
		Fgsigner__Reply *rep = fgsigner__reply__unpack(NULL, h.len, rb);
		assert_non_null(rep);
		assert_non_null(strstr(rep->error, "not a request"));
		fgsigner__reply__free_unpacked(rep, NULL);
		free(rb);
	}
	close(fd);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The local CA plugin through the client and the monitor: issued
 * certificates verify; after the signer is killed the monitor starts
 * another and issuance resumes. */
static void test_plugin_through_monitor(void **state)
{
	char err[2048];
	(void)state;

	struct signer_client *sc = signer_client_start(cfg, 0, err, sizeof err);
	assert_non_null(sc);
	assert_int_equal(signer_client_watch(sc, err, sizeof err), 0);
	struct store *st = store_open(cfg->store_path, 0, err, sizeof err);
	assert_non_null(st);
	struct backends *bs = backends_open_signer(cfg, 0, signer_client_sign_cb, sc, err, sizeof err);
	if (bs == NULL)
		fail_msg("%s", err);
	struct backend *b = backends_find(bs, "local");
	assert_non_null(b);

	for (int round = 0; round < 2; round++) {
		EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		X509_REQ *rq = X509_REQ_new();
		unsigned char *csr = NULL;
		X509_REQ_set_pubkey(rq, k);
		X509_REQ_sign(rq, k, EVP_sha256());
		int clen = i2d_X509_REQ(rq, &csr);
		char rid[32];
		snprintf(rid, sizeof rid, "req-%d", round);
		struct fg_job job = { st, "KEYKEYKEYKEYKEYKEYKEYKEYKEYKEYKEYKEYKEY1", rid };
		static const char *dns[] = { "a.example.com" };
		static const char *eku[] = { "clientAuth" };
		struct fg_issue_request r = {
			.struct_size = sizeof r, .request_id = rid, .device_id = "dev", .slot = "s",
			.job = &job, .csr_der = csr, .csr_len = (size_t)clen, .subject_cn = "a", .dns_names = dns,
			.n_dns = 1, .not_before = time(NULL) - 60, .not_after = time(NULL) + 86400,
			.key_usage = FG_KU_DIGITAL_SIGNATURE, .ext_key_usage = eku, .n_eku = 1, .profile = "default",
		};
		struct fg_issue_result res;
		assert_int_equal(b->ops->issue(b->state, &r, &res), 0);
		if (res.status != FG_ISSUE_OK)
			fail_msg("round %d: %s", round, res.message);
		const unsigned char *p = res.cert_der;
		X509 *x = d2i_X509(NULL, &p, (long)res.cert_len);
		assert_non_null(x);
		assert_int_equal(X509_verify(x, X509_get0_pubkey(ca_cert)), 1);
		X509_free(x);
		fg_issue_result_clear(&res);
		OPENSSL_free(csr);
		X509_REQ_free(rq);
		EVP_PKEY_free(k);

		if (round == 0) {
			/* Kill the signer; the monitor starts another. */
			pid_t old = signer_client_pid(sc);
			assert_true(old > 0);
			kill(old, SIGKILL);
			pid_t now = old;
			for (int i = 0; i < 200 && (now == old || now == 0); i++) {
				usleep(20000);
				now = signer_client_pid(sc);
			}
			assert_true(now > 0 && now != old);
		}
	}
	assert_false(signer_client_failed(sc));
	backends_free(bs);
	store_free(st);
	signer_client_free(sc);
}

/* The buffered receive: messages sent back to back come out one by one,
 * a body larger than the buffer is read whole, and a bad header or a
 * stream cut mid-message is an error, not a message. */
static void test_ipc_buffered(void **state)
{
	(void)state;
	int sv[2];
	struct signer_rbuf *rb = calloc(1, sizeof *rb);
	struct signer_hdr h;
	unsigned char *body = NULL;
	char err[256];
	size_t big = SIGNER_RBUF_SIZE * 3 + 17;
	unsigned char *bigbody = malloc(big);
	assert_non_null(rb);
	assert_non_null(bigbody);
	for (size_t i = 0; i < big; i++)
		bigbody[i] = (unsigned char)(i * 7);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);

	/* Three messages in the socket before the first read. */
	assert_int_equal(signer_ipc_send(sv[0], SIGNER_MSG_REPLY, 1, "one", 3), 0);
	assert_int_equal(signer_ipc_send(sv[0], SIGNER_MSG_REPLY, 2, NULL, 0), 0);
	assert_int_equal(signer_ipc_send(sv[0], SIGNER_MSG_REPLY, 3, "three", 5), 0);
	assert_int_equal(signer_ipc_recv_buf(sv[1], rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err), 0);
	assert_int_equal(h.id, 1);
	assert_int_equal(h.len, 3);
	assert_memory_equal(body, "one", 3);
	free(body);
	assert_int_equal(signer_ipc_recv_buf(sv[1], rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err), 0);
	assert_int_equal(h.id, 2);
	assert_int_equal(h.len, 0);
	assert_null(body);
	assert_int_equal(signer_ipc_recv_buf(sv[1], rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err), 0);
	assert_int_equal(h.id, 3);
	assert_string_equal((char *)body, "three");
	free(body);

	/* A body three buffers long, written from a child (it does not fit
	 * in the socket's buffer at once). */
	pid_t pid = fork();
	if (pid == 0) {
		_exit(signer_ipc_send(sv[0], SIGNER_MSG_REPLY, 4, bigbody, big) == 0 &&
				      signer_ipc_send(sv[0], SIGNER_MSG_REPLY, 5, "after", 5) == 0
			      ? 0
			      : 1);
	}
	assert_int_equal(signer_ipc_recv_buf(sv[1], rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err), 0);
	assert_int_equal(h.id, 4);
	assert_int_equal(h.len, big);
	assert_memory_equal(body, bigbody, big);
	free(body);
	assert_int_equal(signer_ipc_recv_buf(sv[1], rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err), 0);
	assert_int_equal(h.id, 5);
	assert_string_equal((char *)body, "after");
	free(body);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(status, 0);

	/* Above the cap: refused before the body is read. */
	assert_int_equal(signer_ipc_send(sv[0], SIGNER_MSG_REPLY, 6, "0123456789", 10), 0);
	assert_int_equal(signer_ipc_recv_buf(sv[1], rb, 4, &h, &body, err, sizeof err), -1);
	assert_non_null(strstr(err, "more than the cap"));
	assert_null(body);

	/* Bad magic, and a stream cut in the middle of a body. */
	memset(rb, 0, sizeof *rb);
	struct signer_hdr bad = { 0x12345678u, SIGNER_IPC_VERSION, SIGNER_MSG_REPLY, 0, 7 };
	int sv2[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2), 0);
	assert_int_equal(write(sv2[0], &bad, sizeof bad), (ssize_t)sizeof bad);
	assert_int_equal(signer_ipc_recv_buf(sv2[1], rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err), -1);
	assert_non_null(strstr(err, "not the signer protocol"));
	memset(rb, 0, sizeof *rb);
	struct signer_hdr cut = { SIGNER_IPC_MAGIC, SIGNER_IPC_VERSION, SIGNER_MSG_REPLY, 100, 8 };
	assert_int_equal(write(sv2[0], &cut, sizeof cut), (ssize_t)sizeof cut);
	assert_int_equal(write(sv2[0], "partial", 7), 7);
	close(sv2[0]);
	assert_int_equal(signer_ipc_recv_buf(sv2[1], rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err), -1);
	assert_non_null(strstr(err, "closed the socket"));
	assert_null(body);
	/* And a clean end of stream between messages is 1. */
	memset(rb, 0, sizeof *rb);
	close(sv[0]);
	assert_int_equal(signer_ipc_recv_buf(sv[1], rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err), 1);
	close(sv[1]);
	close(sv2[1]);
	free(bigbody);
	free(rb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipc_buffered),
		cmocka_unit_test(test_boundary),
		cmocka_unit_test(test_seccomp_kills),
		cmocka_unit_test(test_plugin_through_monitor),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
