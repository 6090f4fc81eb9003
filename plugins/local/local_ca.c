/*
 * local_ca.c: the built-in CA, a backend plugin like any other.
 *
 * It includes nothing from fleetgate but fleetgate/plugin.h. The CA key
 * and certificate live in <state_dir>/<ca_dir>/ca.key (0600) and ca.crt.
 *
 * Write-ahead issuance: before a signature exists, the job's state gets a
 * "tbs" record holding the reserved serial and the validity window. With the
 * job's own durable parameters (names, usages, CSR), which the host stored
 * when it admitted the job, that determines the to-be-signed certificate
 * exactly. A job resumed after a crash finds the record and signs the same
 * certificate again: never a second serial for one job, and never a
 * signature whose serial is not on disk first.
 *
 * Revocation is recorded in plugin state ("revoked:<serial>"); CRL and OCSP
 * serving build on that record.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fleetgate/plugin.h"

#define SERIAL_BYTES 16   /* 127 random bits: positive, 16 octets */

struct local_ca {
	const struct fg_host *host;
	char name[64];
	char dir[4096];
	EVP_PKEY *key;
	X509 *cert;
	unsigned char *cert_der;
	size_t cert_len;
	const EVP_MD *md;
};

static void errq(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	ERR_clear_error();
	snprintf(err, errlen, "%s%s%s", what, buf[0] ? ": " : "", buf);
}

static void logf_(const struct local_ca *ca, enum fg_level lvl, const char *rid, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void logf_(const struct local_ca *ca, enum fg_level lvl, const char *rid, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	ca->host->log(ca->host->ctx, lvl, rid, msg);
}

/* "10y", "3650d", "12h", "60s", "3600" -> seconds, or -1. */
static long long parse_span(const char *s)
{
	char *end;
	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno)
		return -1;
	long long mul = 1;
	switch (*end) {
	case '\0': break;
	case 's': end++; break;
	case 'm': mul = 60; end++; break;
	case 'h': mul = 3600; end++; break;
	case 'd': mul = 86400; end++; break;
	case 'y': mul = 365LL * 86400; end++; break;
	default: return -1;
	}
	return *end == '\0' && v <= (1LL << 40) / mul ? v * mul : -1;
}

/* Durable file write: temp file, fsync, rename, directory fsync. */
static int write_durable(const char *dir, const char *name, const void *data, size_t len,
			 mode_t mode, char *err, size_t errlen)
{
	char path[4200], tmp[4300];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return -1;
	}
	const unsigned char *p = data;
	size_t left = len;
	int ok = fchmod(fd, mode) == 0;
	while (ok && left > 0) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			ok = 0;
		else {
			p += w;
			left -= (size_t)w;
		}
	}
	ok = ok && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, path) != 0) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	if (e == NULL)
		return -1;
	int rc = X509_add_ext(x, e, -1) == 1 ? 0 : -1;
	X509_EXTENSION_free(e);
	return rc;
}

/* A random positive serial of SERIAL_BYTES octets (top bit clear, first
 * octet non-zero, so it encodes in exactly that many octets). */
static int draw_serial(struct local_ca *ca, unsigned char s[SERIAL_BYTES], char hex[2 * SERIAL_BYTES + 1])
{
	static const char digits[] = "0123456789ABCDEF";
	do {
		if (ca->host->random(ca->host->ctx, s, SERIAL_BYTES) != 0)
			return -1;
		s[0] &= 0x7f;
	} while (s[0] == 0);
	for (int i = 0; i < SERIAL_BYTES; i++) {
		hex[2 * i] = digits[s[i] >> 4];
		hex[2 * i + 1] = digits[s[i] & 15];
	}
	hex[2 * SERIAL_BYTES] = '\0';
	return 0;
}

static int set_serial(X509 *x, const unsigned char *s, size_t n)
{
	BIGNUM *bn = BN_bin2bn(s, (int)n, NULL);
	ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
	int rc = ai && X509_set_serialNumber(x, ai) == 1 ? 0 : -1;
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return rc;
}

static int set_time(X509 *x, long long nb, long long na)
{
	return X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, (time_t *)&(time_t){ (time_t)nb }) &&
	       X509_time_adj_ex(X509_getm_notAfter(x), 0, 0, (time_t *)&(time_t){ (time_t)na }) ? 0 : -1;
}

/* Make the CA key and self-signed certificate. */
static int ca_create(struct local_ca *ca, const char *key_type, const char *cn, long long validity,
		     char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;
	X509 *x = NULL;
	BIO *b = NULL;
	int rc = -1;

	if (strcmp(key_type, "p256") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else if (strcmp(key_type, "p384") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	else if (strcmp(key_type, "rsa3072") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
	else if (strcmp(key_type, "rsa4096") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
	else {
		snprintf(err, errlen, "key_type '%s' is not a CA key type; use p256, p384, rsa3072 or rsa4096",
			 key_type);
		return -1;
	}
	if (k == NULL) {
		errq(err, errlen, "CA key generation failed");
		return -1;
	}
	const EVP_MD *md = strcmp(key_type, "p384") == 0 ? EVP_sha384() : EVP_sha256();
	unsigned char s[SERIAL_BYTES];
	char hex[2 * SERIAL_BYTES + 1];
	long long now = ca->host->now(ca->host->ctx);
	x = X509_new();
	X509_NAME *nm = x ? X509_get_subject_name(x) : NULL;
	if (x == NULL || draw_serial(ca, s, hex) != 0 || X509_set_version(x, 2) != 1 ||
	    set_serial(x, s, sizeof s) != 0 || set_time(x, now - 300, now + validity) != 0 ||
	    X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_UTF8, (const unsigned char *)"fleetgate", -1, -1, 0) != 1 ||
	    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, nm) != 1 || X509_set_pubkey(x, k) != 1) {
		errq(err, errlen, "cannot build the CA certificate");
		goto out;
	}
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
	    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") ||
	    X509_sign(x, k, md) <= 0) {
		errq(err, errlen, "cannot sign the CA certificate");
		goto out;
	}
	b = BIO_new(BIO_s_secmem());
	char *data;
	if (b == NULL || PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1) {
		errq(err, errlen, "cannot encode the CA key");
		goto out;
	}
	long n = BIO_get_mem_data(b, &data);
	if (write_durable(ca->dir, "ca.key", data, (size_t)n, 0600, err, errlen) != 0)
		goto out;
	BIO_free(b);
	b = BIO_new(BIO_s_mem());
	if (b == NULL || PEM_write_bio_X509(b, x) != 1) {
		errq(err, errlen, "cannot encode the CA certificate");
		goto out;
	}
	n = BIO_get_mem_data(b, &data);
	if (write_durable(ca->dir, "ca.crt", data, (size_t)n, 0644, err, errlen) != 0)
		goto out;
	logf_(ca, FG_LEVEL_INFO, NULL, "created CA '%s' (%s, serial %s) in %s", cn, key_type, hex, ca->dir);
	rc = 0;
out:
	BIO_free(b);
	X509_free(x);
	EVP_PKEY_free(k);
	return rc;
}

static int ca_load(struct local_ca *ca, char *err, size_t errlen)
{
	char path[4200];
	FILE *f;

	snprintf(path, sizeof path, "%s/ca.key", ca->dir);
	f = fopen(path, "re");
	if (f == NULL) {
		snprintf(err, errlen, "no CA in %s (%s); run `fleetgate init`", ca->dir, strerror(errno));
		return -1;
	}
	ca->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	snprintf(path, sizeof path, "%s/ca.crt", ca->dir);
	f = fopen(path, "re");
	if (f != NULL) {
		ca->cert = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (ca->key == NULL || ca->cert == NULL) {
		errq(err, errlen, "cannot read the CA key and certificate");
		return -1;
	}
	if (X509_check_private_key(ca->cert, ca->key) != 1) {
		errq(err, errlen, "ca.key does not match ca.crt");
		return -1;
	}
	unsigned char *der = NULL;
	int n = i2d_X509(ca->cert, &der);
	if (n <= 0 || (ca->cert_der = malloc((size_t)n)) == NULL) {
		OPENSSL_free(der);
		snprintf(err, errlen, "cannot encode the CA certificate");
		return -1;
	}
	memcpy(ca->cert_der, der, (size_t)n);
	ca->cert_len = (size_t)n;
	OPENSSL_free(der);
	ca->md = EVP_PKEY_is_a(ca->key, "EC") && EVP_PKEY_get_bits(ca->key) > 256 ? EVP_sha384()
										       : EVP_sha256();
	return 0;
}

static void ca_close(void *state)
{
	struct local_ca *ca = state;
	if (ca == NULL)
		return;
	EVP_PKEY_free(ca->key);
	X509_free(ca->cert);
	free(ca->cert_der);
	free(ca);
}

static int ca_open(const struct fg_host *host, const struct fg_kv *kv, size_t n, void **state,
		   char *err, size_t errlen)
{
	struct local_ca *ca = NULL;
	const char *sd = fg_kv_get(kv, n, "state_dir"), *cd = fg_kv_get(kv, n, "ca_dir");
	const char *kt = fg_kv_get(kv, n, "key_type"), *cn = fg_kv_get(kv, n, "ca_name");
	const char *cv = fg_kv_get(kv, n, "ca_validity"), *create = fg_kv_get(kv, n, "create");
	const char *nm = fg_kv_get(kv, n, "name");

	*state = NULL;
	if (host == NULL || host->abi_version != FG_PLUGIN_ABI_VERSION ||
	    host->struct_size < sizeof(struct fg_host)) {
		snprintf(err, errlen, "host speaks plugin ABI %u, this local CA plugin needs %d",
			 host ? host->abi_version : 0, FG_PLUGIN_ABI_VERSION);
		return -1;
	}
	ca = calloc(1, sizeof *ca);
	if (ca == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ca->host = host;
	snprintf(ca->name, sizeof ca->name, "%s", nm ? nm : "local");
	cd = cd ? cd : "ca";
	if (cd[0] == '/' || sd == NULL)
		snprintf(ca->dir, sizeof ca->dir, "%s", cd);
	else
		snprintf(ca->dir, sizeof ca->dir, "%s/%s", sd, cd);
	long long validity = parse_span(cv ? cv : "10y");
	if (validity <= 0) {
		snprintf(err, errlen, "ca_validity '%s' is not a duration like 10y or 3650d", cv);
		goto fail;
	}
	char keypath[4200];
	snprintf(keypath, sizeof keypath, "%s/ca.key", ca->dir);
	if (access(keypath, F_OK) != 0 && create && strcmp(create, "yes") == 0) {
		if (mkdir(ca->dir, 0700) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create %s: %s", ca->dir, strerror(errno));
			goto fail;
		}
		if (ca_create(ca, kt ? kt : "p256", cn ? cn : "fleetgate local CA", validity, err,
			      errlen) != 0)
			goto fail;
	}
	if (ca_load(ca, err, errlen) != 0)
		goto fail;
	*state = ca;
	return 0;
fail:
	ca_close(ca);
	return -1;
}

/* Build the key-usage extension value from FG_KU_* bits. */
static void ku_text(uint32_t ku, char *out, size_t outlen)
{
	static const struct { uint32_t bit; const char *name; } t[] = {
		{ FG_KU_DIGITAL_SIGNATURE, "digitalSignature" },
		{ FG_KU_NON_REPUDIATION, "nonRepudiation" },
		{ FG_KU_KEY_ENCIPHERMENT, "keyEncipherment" },
		{ FG_KU_DATA_ENCIPHERMENT, "dataEncipherment" },
		{ FG_KU_KEY_AGREEMENT, "keyAgreement" },
	};
	snprintf(out, outlen, "critical");
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		if (ku & t[i].bit)
			snprintf(out + strlen(out), outlen - strlen(out), ",%s", t[i].name);
}

static int eku_name_ok(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.'))
			return 0;
	return 1;
}

static int add_san(X509 *x, const struct fg_issue_request *req, int critical)
{
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	int rc = -1;
	if (gens == NULL)
		return -1;
	for (size_t i = 0; i < req->n_dns + req->n_email; i++) {
		int is_dns = i < req->n_dns;
		const char *v = is_dns ? req->dns_names[i] : req->emails[i - req->n_dns];
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		if (g == NULL || s == NULL || ASN1_STRING_set(s, v, -1) != 1) {
			GENERAL_NAME_free(g);
			ASN1_IA5STRING_free(s);
			goto out;
		}
		GENERAL_NAME_set0_value(g, is_dns ? GEN_DNS : GEN_EMAIL, s);
		sk_GENERAL_NAME_push(gens, g);
	}
	for (size_t i = 0; i < req->n_ip; i++) {
		ASN1_OCTET_STRING *ip = a2i_IPADDRESS(req->ip_names[i]);
		GENERAL_NAME *g = ip ? GENERAL_NAME_new() : NULL;
		if (g == NULL) {
			ASN1_OCTET_STRING_free(ip);
			goto out;
		}
		GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
		sk_GENERAL_NAME_push(gens, g);
	}
	if (sk_GENERAL_NAME_num(gens) == 0) {
		rc = 0;
		goto out;
	}
	rc = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, critical, X509V3_ADD_DEFAULT) == 1 ? 0 : -1;
out:
	GENERAL_NAMES_free(gens);
	return rc;
}

/* Build the leaf for req with the given serial and validity, unsigned. */
static X509 *build_leaf(struct local_ca *ca, const struct fg_issue_request *req,
			const unsigned char *serial, long long nb, long long na, char *err, size_t errlen)
{
	const unsigned char *p = req->csr_der;
	X509_REQ *csr = d2i_X509_REQ(NULL, &p, (long)req->csr_len);
	X509 *x = X509_new();
	char ku[160];

	if (csr == NULL || x == NULL) {
		errq(err, errlen, "the CSR cannot be read");
		goto fail;
	}
	X509_NAME *subj = X509_get_subject_name(x);
	int has_cn = req->subject_cn && req->subject_cn[0];
	if (X509_set_version(x, 2) != 1 || set_serial(x, serial, SERIAL_BYTES) != 0 ||
	    set_time(x, nb, na) != 0 ||
	    X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1 ||
	    X509_set_pubkey(x, X509_REQ_get0_pubkey(csr)) != 1 ||
	    (has_cn && X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8,
						  (const unsigned char *)req->subject_cn, -1, -1, 0) != 1)) {
		errq(err, errlen, "cannot build the certificate");
		goto fail;
	}
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, ca->cert, x, NULL, NULL, 0);
	ku_text(req->key_usage, ku, sizeof ku);
	if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
	    (req->key_usage && add_ext(x, &ctx, NID_key_usage, ku)) ||
	    add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
	    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always")) {
		errq(err, errlen, "cannot add extensions");
		goto fail;
	}
	if (req->n_eku > 0) {
		char eku[512] = "";
		for (size_t i = 0; i < req->n_eku; i++) {
			if (!eku_name_ok(req->ext_key_usage[i])) {
				snprintf(err, errlen, "extended key usage '%s' is not a name or OID",
					 req->ext_key_usage[i]);
				goto fail;
			}
			snprintf(eku + strlen(eku), sizeof eku - strlen(eku), "%s%s", i ? "," : "",
				 req->ext_key_usage[i]);
		}
		if (add_ext(x, &ctx, NID_ext_key_usage, eku)) {
			errq(err, errlen, "cannot add the extended key usage");
			goto fail;
		}
	}
	/* RFC 5280 4.2.1.6: with an empty subject the SAN is critical. */
	if (add_san(x, req, !has_cn) != 0) {
		errq(err, errlen, "cannot add the subject alternative names");
		goto fail;
	}
	X509_REQ_free(csr);
	return x;
fail:
	X509_REQ_free(csr);
	X509_free(x);
	return NULL;
}

static int ca_issue(void *state, const struct fg_issue_request *req, struct fg_issue_result *res)
{
	struct local_ca *ca = state;
	unsigned char serial[SERIAL_BYTES], *val = NULL, *der = NULL;
	char hex[2 * SERIAL_BYTES + 1], rec[128];
	size_t vlen = 0;
	long long nb, na;
	X509 *x = NULL;

	memset(res, 0, sizeof *res);
	res->status = FG_ISSUE_ERROR;
	res->retry_after = 10;
	if (req->n_dns + req->n_ip + req->n_email == 0 && !(req->subject_cn && req->subject_cn[0])) {
		res->status = FG_ISSUE_REJECTED;
		snprintf(res->message, sizeof res->message, "the request names no subject");
		return 0;
	}
	int r = ca->host->job_get(req->job, "tbs", &val, &vlen);
	if (r < 0) {
		snprintf(res->message, sizeof res->message, "cannot read the job's state");
		return 0;
	}
	if (r == 1) {
		/* Resume: the serial and window were recorded before a crash. */
		char buf[128];
		snprintf(buf, sizeof buf, "%.*s", (int)(vlen < sizeof buf ? vlen : sizeof buf - 1), val);
		free(val);
		if (sscanf(buf, "%32s %lld %lld", hex, &nb, &na) != 3 || strlen(hex) != 2 * SERIAL_BYTES) {
			snprintf(res->message, sizeof res->message, "the job's recorded serial is unreadable");
			return 0;
		}
		for (int i = 0; i < SERIAL_BYTES; i++) {
			unsigned v;
			sscanf(hex + 2 * i, "%2x", &v);
			serial[i] = (unsigned char)v;
		}
		logf_(ca, FG_LEVEL_INFO, req->request_id, "resuming issuance of serial %s", hex);
	} else {
		int ok = 0;
		for (int attempt = 0; attempt < 5 && !ok; attempt++) {
			if (draw_serial(ca, serial, hex) != 0) {
				snprintf(res->message, sizeof res->message, "no randomness for a serial");
				return 0;
			}
			int sr = ca->host->serial_reserve(ca->host->ctx, hex);
			if (sr < 0) {
				snprintf(res->message, sizeof res->message, "cannot reserve a serial");
				return 0;
			}
			ok = sr == 0;
		}
		if (!ok) {
			snprintf(res->message, sizeof res->message, "no free serial after 5 draws");
			return 0;
		}
		nb = req->not_before;
		na = req->not_after;
		long long ca_na = 0;
		struct tm tm;
		if (ASN1_TIME_to_tm(X509_get0_notAfter(ca->cert), &tm) == 1)
			ca_na = (long long)timegm(&tm);
		if (ca_na && na > ca_na)
			na = ca_na;
		int n = snprintf(rec, sizeof rec, "%s %lld %lld", hex, nb, na);
		if (ca->host->job_put(req->job, "tbs", (const unsigned char *)rec, (size_t)n) != 0) {
			snprintf(res->message, sizeof res->message, "cannot record the serial before signing");
			return 0;
		}
	}

	x = build_leaf(ca, req, serial, nb, na, res->message, sizeof res->message);
	if (x == NULL) {
		res->status = FG_ISSUE_REJECTED;
		return 0;
	}
	if (X509_sign(x, ca->key, ca->md) <= 0) {
		errq(res->message, sizeof res->message, "signing failed");
		X509_free(x);
		return 0;
	}
	int n = i2d_X509(x, &der);
	X509_free(x);
	if (n <= 0)
		goto oom;
	res->cert_der = malloc((size_t)n);
	res->chain_der = calloc(1, sizeof *res->chain_der);
	res->chain_len = calloc(1, sizeof *res->chain_len);
	if (res->cert_der == NULL || res->chain_der == NULL || res->chain_len == NULL ||
	    (res->chain_der[0] = malloc(ca->cert_len)) == NULL)
		goto oom;
	memcpy(res->cert_der, der, (size_t)n);
	res->cert_len = (size_t)n;
	memcpy(res->chain_der[0], ca->cert_der, ca->cert_len);
	res->chain_len[0] = ca->cert_len;
	res->n_chain = 1;
	res->status = FG_ISSUE_OK;
	res->retry_after = 0;
	OPENSSL_free(der);
	return 0;
oom:
	OPENSSL_free(der);
	fg_issue_result_clear(res);
	res->status = FG_ISSUE_ERROR;
	res->retry_after = 10;
	snprintf(res->message, sizeof res->message, "out of memory");
	return 0;
}

static int ca_revoke(void *state, const unsigned char *cert_der, size_t cert_len,
		     enum fg_revoke_reason reason, char *err, size_t errlen)
{
	struct local_ca *ca = state;
	const unsigned char *p = cert_der;
	X509 *x = d2i_X509(NULL, &p, (long)cert_len);
	if (x == NULL) {
		errq(err, errlen, "not a certificate");
		return -1;
	}
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	char key[96], val[64];
	int rc = -1;
	if (hex != NULL) {
		snprintf(key, sizeof key, "revoked:%s", hex);
		int n = snprintf(val, sizeof val, "%d %lld", (int)reason,
				 (long long)ca->host->now(ca->host->ctx));
		rc = ca->host->state_put(ca->host->ctx, key, (const unsigned char *)val, (size_t)n) == 0 ? 0 : -1;
		if (rc != 0)
			snprintf(err, errlen, "cannot record the revocation of %s", hex);
	}
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(x);
	return rc;
}

static int ca_cacerts(void *state, struct fg_cert_list *out, char *err, size_t errlen)
{
	struct local_ca *ca = state;
	memset(out, 0, sizeof *out);
	out->der = calloc(1, sizeof *out->der);
	out->len = calloc(1, sizeof *out->len);
	if (out->der == NULL || out->len == NULL || (out->der[0] = malloc(ca->cert_len)) == NULL) {
		free(out->der);
		free(out->len);
		memset(out, 0, sizeof *out);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memcpy(out->der[0], ca->cert_der, ca->cert_len);
	out->len[0] = ca->cert_len;
	out->n = 1;
	return 0;
}

static const struct fg_backend_ops local_ops = {
	.abi_version = FG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct fg_backend_ops),
	.name = "local",
	.description = "built-in OpenSSL CA",
	.open = ca_open,
	.issue = ca_issue,
	.poll = NULL,
	.revoke = ca_revoke,
	.cacerts = ca_cacerts,
	.close = ca_close,
};

__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void);
__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void)
{
	return &local_ops;
}
