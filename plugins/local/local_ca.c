/*
 * local_ca.c: the built-in CA, a backend plugin like any other.
 *
 * It includes nothing from fleetgate but fleetgate/plugin.h. The CA key and
 * certificate live in <state_dir>/<ca_dir>/ca.key (PKCS#8 PEM, 0600) and
 * ca.crt (PEM, 0644); `fleetgate init` opens the plugin with create = "yes"
 * to make them.
 *
 * Write-ahead issuance: issue() builds the whole certificate except its
 * signature, reserves its serial with the host, and stores that unsigned
 * certificate (DER, with the signature algorithm filled in and an empty
 * signature) in the job's durable state under "tbs" before it signs. A job
 * resumed after a crash finds the record and signs exactly those bytes
 * again: one job never gets a second serial, and no signature exists whose
 * serial and contents were not on disk first.
 *
 * Threads: after open, the instance is read-only (key, certificate, names,
 * key identifier, algorithm), so issue, revoke and cacerts run concurrently
 * without a lock. OpenSSL 3 allows signing with one EVP_PKEY from several
 * threads.
 *
 * Signer mode: when the host lends a signer (FG_HOST_HAS_SIGNER, as
 * fleetgated does), the CA key lives in the gateway's signer process and
 * this plugin never loads it: it reads ca.crt only, asks the signer for the
 * signature algorithm to write into records, and sends each certificate,
 * CRL and OCSP response to be signed (host->sign). CRLs and OCSP responses
 * are first signed with a throwaway key so that OpenSSL encodes them whole;
 * the signer checks them and signs them again with the CA key. Whatever
 * comes back is verified against the CA certificate before it is used. The
 * CLI lends no signer: `fleetgate init` and offline operations load the key.
 *
 * Revocation is recorded in plugin state ("revoked:<serial>" = "<reason>
 * <unix time>"). The host's store is the authority on which certificates are
 * revoked and when: make_crl and ocsp_respond get that from the host and
 * only add the reason codes from these records (see crl.c below the issue
 * code). The CRL number lives in plugin state "crl_number" (decimal).
 *
 * Settings for the gateway's HTTP side: crl_url and ocsp_url (http:// URIs
 * put in every issued certificate as its CRL distribution point and its
 * authorityInfoAccess OCSP responder), crl_validity (nextUpdate - thisUpdate
 * of a CRL, default 7d) and ocsp_validity (of an OCSP answer, default 1h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fleetgate/plugin.h"
#include "fgp.h"

#define SERIAL_BYTES 16           /* 121 to 127 random bits, positive: 16 DER octets */
#define SERIAL_RESERVE_TRIES 5    /* draws before giving up on a free serial */
#define MAX_VALIDITY (100LL * 365 * 86400)
#define RETRY_SECONDS 10          /* suggested retry for transient errors */

struct local_ca {
	const struct fg_host *host;
	char name[64];                /* backend name, for messages */
	char dir[PATH_MAX];           /* where ca.key and ca.crt live */
	EVP_PKEY *key;                /* CA private key */
	X509 *cert;                   /* CA certificate */
	X509_NAME *subject;           /* CA subject, pre-encoded: leaves' issuer */
	ASN1_OCTET_STRING *ski;       /* CA subject key id: leaves' AKI */
	X509_ALGOR *sigalg;           /* what X509_sign writes, for the unsigned record */
	const EVP_MD *md;             /* SHA-256, or SHA-384/512 for P-384/P-521 */
	int64_t not_after;            /* CA notAfter, Unix seconds */
	unsigned char *cert_der;      /* CA certificate DER, for chains */
	size_t cert_len;
	char crl_url[1024];           /* CRL distribution point of leaves, "" = none */
	char ocsp_url[1024];          /* authorityInfoAccess OCSP of leaves, "" = none */
	long long crl_validity;       /* seconds from thisUpdate to nextUpdate */
	long long ocsp_validity;      /* seconds, of an OCSP answer */
	int remote;                   /* signer mode: key is NULL, host->sign signs */
	EVP_PKEY *scratch;            /* signer mode: throwaway key for CRL/OCSP encoding */
	X509 *scratch_cert;           /* ... and a certificate of it (OCSP_basic_sign wants one) */
};

static void ca_log(const struct local_ca *ca, enum fg_level lvl, const char *rid, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void ca_log(const struct local_ca *ca, enum fg_level lvl, const char *rid, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (ca->host->log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	ca->host->log(ca->host->ctx, lvl, rid, msg);
}

/* A duration: decimal seconds, or a number with suffix s, h, d or y (365
 * days). Returns the seconds, or -1 when s is not such a duration, is zero,
 * or exceeds 100 years. */
static long long parse_span(const char *s)
{
	long long v = 0, mul = 1;
	const char *p = s;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > MAX_VALIDITY)
			return -1;
		v = v * 10 + (*p - '0');
	}
	switch (*p) {
	case '\0': break;
	case 's': p++; break;
	case 'h': mul = 3600; p++; break;
	case 'd': mul = 86400; p++; break;
	case 'y': mul = 365LL * 86400; p++; break;
	default: return -1;
	}
	if (*p != '\0' || v == 0 || v > MAX_VALIDITY / mul)
		return -1;
	return v * mul;
}

/* Write data to dir/name durably and atomically: a temporary file in the
 * same directory created with mode, written, fsync'ed, renamed over name,
 * then the directory fsync'ed so the rename itself survives a crash. A
 * reader sees the old file or the new one, never a part. 0 or -1 with err. */
static int write_durable(const char *dir, const char *name, const void *data, size_t len,
			 mode_t mode, char *err, size_t errlen)
{
	char path[PATH_MAX + 64], tmp[PATH_MAX + 64];
	const unsigned char *p = data;
	int fd = -1, dfd = -1, rc = -1;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, name);
	fd = mkostemp(tmp, O_CLOEXEC);     /* created 0600 */
	if (fd < 0) {
		snprintf(err, errlen, "cannot create a file in %s: %s; check that it exists and is writable",
			 dir, strerror(errno));
		return -1;
	}
	if (fchmod(fd, mode) != 0)
		goto fail;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto fail;
		p += w;
		len -= (size_t)w;
	}
	if (fsync(fd) != 0)
		goto fail;
	int cr = close(fd);
	fd = -1;
	if (cr != 0 || rename(tmp, path) != 0)
		goto fail;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0) {
		snprintf(err, errlen, "cannot sync directory %s: %s", dir, strerror(errno));
		goto out;
	}
	rc = 0;
	goto out;
fail:
	snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
	unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	return rc;
}

/* Open a file for PEM reading. NULL with err when it cannot be read. */
static BIO *read_bio(const char *path, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(path, "r");
	if (b == NULL)
		fgp_ssl_err(err, errlen, "cannot read %s (%s)", path, strerror(errno));
	return b;
}

/* Upper-case hex of a positive serial, an even number of digits (as
 * `openssl x509 -serial` prints it and the gateway stores it). 0 or -1. */
static int serial_hex(const ASN1_INTEGER *ai, char *out, size_t outlen)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(ai, NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	int rc = -1;

	if (hex != NULL && hex[0] != '-') {
		size_t n = strlen(hex);
		if (n + 2 <= outlen) {
			snprintf(out, outlen, "%s%s", n % 2 ? "0" : "", hex);
			rc = 0;
		}
	}
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

/* Draw a fresh serial: SERIAL_BYTES random octets with the top bit clear
 * (positive) and the first octet non-zero, so it is exactly SERIAL_BYTES
 * DER octets with at least 121 random bits (RFC 5280 4.1.2.2 and the CA/B
 * Forum's 64 bits). Returns a new ASN1_INTEGER, or NULL. */
static ASN1_INTEGER *draw_serial(struct local_ca *ca)
{
	unsigned char s[SERIAL_BYTES];
	ASN1_INTEGER *ai = NULL;
	BIGNUM *bn = NULL;

	for (int i = 0; i < 16; i++) {
		if (ca->host->random(ca->host->ctx, s, sizeof s) != 0)
			return NULL;
		s[0] &= 0x7f;
		if (s[0] != 0)
			break;
	}
	if (s[0] != 0 && (bn = BN_bin2bn(s, (int)sizeof s, NULL)) != NULL)
		ai = BN_to_ASN1_INTEGER(bn, NULL);
	BN_free(bn);
	OPENSSL_cleanse(s, sizeof s);
	return ai;
}

/* Extensions shared by the CA and leaf certificates. Each adds one
 * extension to x and returns 0, or -1 with the OpenSSL error queued. */

static int add_basic_constraints(X509 *x, int is_ca, long pathlen)
{
	BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
	int rc = -1;

	if (bc == NULL)
		return -1;
	bc->ca = is_ca ? 0xff : 0;
	if (is_ca && pathlen >= 0 && ((bc->pathlen = ASN1_INTEGER_new()) == NULL ||
				      ASN1_INTEGER_set(bc->pathlen, pathlen) != 1))
		goto out;
	rc = X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) == 1 ? 0 : -1;
out:
	BASIC_CONSTRAINTS_free(bc);
	return rc;
}

/* keyUsage from RFC 5280 4.2.1.3 bit numbers (bit 0 = digitalSignature). */
static int add_key_usage(X509 *x, unsigned bits)
{
	ASN1_BIT_STRING *bs = ASN1_BIT_STRING_new();
	int rc = -1;

	if (bs == NULL)
		return -1;
	for (int i = 0; i < 9; i++)
		if ((bits & (1u << i)) && ASN1_BIT_STRING_set_bit(bs, i, 1) != 1)
			goto out;
	rc = X509_add1_ext_i2d(x, NID_key_usage, bs, 1, X509V3_ADD_DEFAULT) == 1 ? 0 : -1;
out:
	ASN1_BIT_STRING_free(bs);
	return rc;
}

/* The key identifier of x's public key: SHA-1 of the subjectPublicKey bits
 * (RFC 5280 4.2.1.2, method 1). A new octet string, or NULL. */
static ASN1_OCTET_STRING *key_id(const X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	ASN1_OCTET_STRING *os = NULL;

	if (X509_pubkey_digest(x, EVP_sha1(), md, &mdlen) != 1 || (os = ASN1_OCTET_STRING_new()) == NULL ||
	    ASN1_OCTET_STRING_set(os, md, (int)mdlen) != 1) {
		ASN1_OCTET_STRING_free(os);
		return NULL;
	}
	return os;
}

/* subjectKeyIdentifier of x's own key; the id also goes to *out when out is
 * not NULL (the caller frees it). */
static int add_ski(X509 *x, ASN1_OCTET_STRING **out)
{
	ASN1_OCTET_STRING *os = key_id(x);
	int rc = -1;

	if (os != NULL && X509_add1_ext_i2d(x, NID_subject_key_identifier, os, 0, X509V3_ADD_DEFAULT) == 1)
		rc = 0;
	if (rc == 0 && out != NULL)
		*out = os;
	else
		ASN1_OCTET_STRING_free(os);
	return rc;
}

/* authorityKeyIdentifier with keyIdentifier only (RFC 5280 4.2.1.1). */
static int add_aki(X509 *x, const ASN1_OCTET_STRING *keyid)
{
	AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
	int rc = -1;

	if (akid == NULL || (akid->keyid = ASN1_OCTET_STRING_dup(keyid)) == NULL)
		goto out;
	rc = X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT) == 1 ? 0 : -1;
out:
	AUTHORITY_KEYID_free(akid);
	return rc;
}

/* Make a CA key of key_type. NULL with err for an unknown type. */
static EVP_PKEY *ca_keygen(const char *key_type, char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;

	if (strcmp(key_type, "p256") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else if (strcmp(key_type, "p384") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	else if (strcmp(key_type, "p521") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
	else if (strcmp(key_type, "rsa3072") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
	else if (strcmp(key_type, "rsa4096") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
	else {
		snprintf(err, errlen, "key_type '%s' is not a CA key type; use p256, p384, p521, rsa3072 or rsa4096",
			 key_type);
		return NULL;
	}
	if (k == NULL)
		fgp_ssl_err(err, errlen, "cannot generate a %s CA key", key_type);
	return k;
}

/* The digest a CA key signs with: SHA-384 for P-384, SHA-512 for P-521,
 * SHA-256 for P-256 and RSA. */
static const EVP_MD *ca_digest(const EVP_PKEY *k)
{
	if (EVP_PKEY_is_a(k, "EC")) {
		int bits = EVP_PKEY_get_bits(k);
		if (bits > 384)
			return EVP_sha512();
		if (bits > 256)
			return EVP_sha384();
	}
	return EVP_sha256();
}

/* Make the CA: a key of key_type and a self-signed certificate (subject
 * O=fleetgate, CN=cn; valid from a minute ago, for clock slack, for
 * validity seconds; CA:TRUE pathlen 0; keyCertSign and cRLSign), then write
 * ca.crt and ca.key durably. ca.crt goes first: a crash in between leaves
 * no key, so the next `fleetgate init` simply makes a new CA. 0 or -1. */
static int ca_create(struct local_ca *ca, const char *key_type, const char *cn, long long validity,
		     char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;
	X509 *x = NULL;
	ASN1_INTEGER *serial = NULL;
	ASN1_OCTET_STRING *ski = NULL;
	BIO *b = NULL;
	char *data, hex[48] = "";
	long n;
	int rc = -1;

	if (mkdir(ca->dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create CA directory %s: %s", ca->dir, strerror(errno));
		return -1;
	}
	if ((k = ca_keygen(key_type, err, errlen)) == NULL)
		return -1;
	time_t now = (time_t)ca->host->now(ca->host->ctx);
	x = X509_new();
	serial = draw_serial(ca);
	X509_NAME *nm = x ? X509_get_subject_name(x) : NULL;
	if (x == NULL || serial == NULL || X509_set_version(x, X509_VERSION_3) != 1 ||
	    X509_set_serialNumber(x, serial) != 1 ||
	    ASN1_TIME_set(X509_getm_notBefore(x), now - 60) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(x), now + (time_t)validity) == NULL ||
	    X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_UTF8, (const unsigned char *)"fleetgate", -1, -1, 0) != 1 ||
	    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, nm) != 1 || X509_set_pubkey(x, k) != 1) {
		fgp_ssl_err(err, errlen, "cannot build the CA certificate (ca_name '%s')", cn);
		goto out;
	}
	if (add_basic_constraints(x, 1, 0) != 0 || add_key_usage(x, (1u << 5) | (1u << 6)) != 0 ||
	    add_ski(x, &ski) != 0 || add_aki(x, ski) != 0) {
		fgp_ssl_err(err, errlen, "cannot add the CA certificate's extensions");
		goto out;
	}
	if (X509_sign(x, k, ca_digest(k)) <= 0) {
		fgp_ssl_err(err, errlen, "cannot sign the CA certificate");
		goto out;
	}
	serial_hex(serial, hex, sizeof hex);
	if ((b = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_X509(b, x) != 1) {
		fgp_ssl_err(err, errlen, "cannot encode the CA certificate");
		goto out;
	}
	n = BIO_get_mem_data(b, &data);
	if (write_durable(ca->dir, "ca.crt", data, (size_t)n, 0644, err, errlen) != 0)
		goto out;
	BIO_free(b);
	/* PKCS#8, unencrypted: the file mode and the directory protect it. */
	if ((b = BIO_new(BIO_s_secmem())) == NULL ||
	    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1) {
		fgp_ssl_err(err, errlen, "cannot encode the CA key");
		goto out;
	}
	n = BIO_get_mem_data(b, &data);
	if (write_durable(ca->dir, "ca.key", data, (size_t)n, 0600, err, errlen) != 0)
		goto out;
	ca_log(ca, FG_LEVEL_INFO, NULL, "created CA \"%s\" (%s, serial %s) in %s", cn, key_type, hex,
	       ca->dir);
	rc = 0;
out:
	BIO_free(b);   /* a secmem BIO wipes its buffer */
	ASN1_OCTET_STRING_free(ski);
	ASN1_INTEGER_free(serial);
	X509_free(x);
	EVP_PKEY_free(k);
	return rc;
}

/* The AlgorithmIdentifier X509_sign will write for key and md, asked from
 * the signature provider so that the unsigned record carries the same bytes
 * the signed certificate will. NULL on failure. */
static X509_ALGOR *sign_algor(EVP_PKEY *key, const EVP_MD *md)
{
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char aid[256];
	OSSL_PARAM params[2] = {
		OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, aid, sizeof aid),
		OSSL_PARAM_END
	};
	X509_ALGOR *alg = NULL;

	if (mctx != NULL && EVP_DigestSignInit(mctx, &pctx, md, NULL, key) == 1 &&
	    EVP_PKEY_CTX_get_params(pctx, params) == 1 && OSSL_PARAM_modified(&params[0])) {
		const unsigned char *p = aid;
		alg = d2i_X509_ALGOR(NULL, &p, (long)params[0].return_size);
	}
	EVP_MD_CTX_free(mctx);
	return alg;
}

/* Ask the host's signer to sign der (see fg_host.sign). 0 with *out
 * (malloc'd), 1 refused, -1 unavailable; msg says why. */
static int remote_sign(const struct local_ca *ca, int kind, const char *profile, const char *serial,
		       const unsigned char *der, size_t len, unsigned char **out, size_t *outlen, char *msg,
		       size_t msglen)
{
	char why[512] = "";
	int r = ca->host->sign(ca->host->ctx, kind, profile, serial, der, len, out, outlen, why, sizeof why);

	if (r != 0)
		snprintf(msg, msglen, "%s", why[0] ? why : "the signer gave no reason");
	return r < 0 ? -1 : r;
}

/* Signer mode set-up: the signature algorithm from the signer, and a
 * throwaway P-256 key with a self-signed certificate, used only to make
 * OpenSSL encode CRLs and OCSP responses before the signer signs them for
 * real. 0 or -1 with err. */
static int remote_setup(struct local_ca *ca, char *err, size_t errlen)
{
	unsigned char *aid = NULL;
	size_t aidlen = 0;
	char why[512];
	int r = remote_sign(ca, FG_SIGN_ALGORITHM, NULL, NULL, NULL, 0, &aid, &aidlen, why, sizeof why);

	if (r != 0) {
		snprintf(err, errlen, "cannot ask the signer process for the signature algorithm of %s: %s",
			 ca->dir, why);
		return -1;
	}
	const unsigned char *p = aid;
	ca->sigalg = aidlen <= LONG_MAX ? d2i_X509_ALGOR(NULL, &p, (long)aidlen) : NULL;
	free(aid);
	if (ca->sigalg == NULL) {
		fgp_ssl_err(err, errlen, "the signer process answered a signature algorithm that does not parse");
		return -1;
	}
	ca->scratch = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (ca->scratch == NULL || (ca->scratch_cert = X509_new()) == NULL ||
	    X509_set_version(ca->scratch_cert, X509_VERSION_3) != 1 ||
	    X509_set_subject_name(ca->scratch_cert, ca->subject) != 1 ||
	    X509_set_issuer_name(ca->scratch_cert, ca->subject) != 1 ||
	    X509_set_pubkey(ca->scratch_cert, ca->scratch) != 1 ||
	    ASN1_TIME_set(X509_getm_notBefore(ca->scratch_cert), 0) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(ca->scratch_cert), 0) == NULL ||
	    X509_sign(ca->scratch_cert, ca->scratch, EVP_sha256()) <= 0) {
		fgp_ssl_err(err, errlen, "cannot make the scratch key for CRL and OCSP encoding");
		return -1;
	}
	return 0;
}

/* Load ca.key and ca.crt from ca->dir and derive what issue needs: the
 * encoded subject, the key identifier, the signature algorithm and the
 * expiry. Checks that the certificate is a CA certificate for that key. */
static int ca_load(struct local_ca *ca, char *err, size_t errlen)
{
	char keypath[PATH_MAX + 16], crtpath[PATH_MAX + 16];
	struct stat sb;
	struct tm tm;
	BIO *b = NULL;
	unsigned char *der = NULL;
	int rc = -1;

	snprintf(keypath, sizeof keypath, "%s/ca.key", ca->dir);
	snprintf(crtpath, sizeof crtpath, "%s/ca.crt", ca->dir);
	if (ca->remote) {
		/* The signer process loaded (and checked) the key; this
		 * process must never read it. */
		if (stat(crtpath, &sb) != 0) {
			snprintf(err, errlen, errno == ENOENT ? "no CA in %s; run `fleetgate init`" : "cannot read %s/ca.crt",
				 ca->dir);
			return -1;
		}
	} else {
		if (stat(keypath, &sb) != 0) {
			if (errno == ENOENT)
				snprintf(err, errlen, "no CA in %s; run `fleetgate init`", ca->dir);
			else
				snprintf(err, errlen, "cannot read %s: %s", keypath, strerror(errno));
			return -1;
		}
		if (sb.st_mode & 077)
			ca_log(ca, FG_LEVEL_WARN, NULL, "%s is readable by group or others (mode %03o); chmod 600 it",
			       keypath, (unsigned)(sb.st_mode & 0777));
		if ((b = read_bio(keypath, err, errlen)) == NULL)
			goto out;
		ca->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
		BIO_free(b);
		if (ca->key == NULL) {
			fgp_ssl_err(err, errlen, "%s is not a PEM private key (an encrypted key is not supported)",
				    keypath);
			goto out;
		}
	}
	if ((b = read_bio(crtpath, err, errlen)) == NULL)
		goto out;
	ca->cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	if (ca->cert == NULL) {
		fgp_ssl_err(err, errlen, "%s is not a PEM certificate", crtpath);
		goto out;
	}
	if (!ca->remote && X509_check_private_key(ca->cert, ca->key) != 1) {
		fgp_ssl_err(err, errlen, "%s does not belong to the key in %s; restore the matching pair", crtpath,
			keypath);
		goto out;
	}
	/* X509_check_ca also fills the certificate's extension cache, so that
	 * later concurrent readers never write to it. */
	if (X509_check_ca(ca->cert) != 1) {
		snprintf(err, errlen, "%s is not a CA certificate (no basicConstraints CA:TRUE)", crtpath);
		goto out;
	}
	/* Leaves' AKI must equal the CA's SKI; a CA without one gets the
	 * RFC 5280 method 1 id. */
	const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(ca->cert);
	ca->ski = ski != NULL ? ASN1_OCTET_STRING_dup(ski) : key_id(ca->cert);
	ca->subject = X509_NAME_dup(X509_get_subject_name(ca->cert));
	ca->md = ca_digest(X509_get0_pubkey(ca->cert));
	if (ca->remote) {
		if (remote_setup(ca, err, errlen) != 0)
			goto out;
	} else {
		ca->sigalg = sign_algor(ca->key, ca->md);
	}
	int n = i2d_X509(ca->cert, &der);
	/* Encoding the name now clears its "modified" flag: copies made
	 * concurrently by issue then only read it. */
	if (ca->ski == NULL || ca->subject == NULL || i2d_X509_NAME(ca->subject, NULL) <= 0 ||
	    ca->sigalg == NULL || n <= 0 || (ca->cert_der = malloc((size_t)n)) == NULL) {
		fgp_ssl_err(err, errlen, "cannot prepare the CA in %s for signing", ca->dir);
		goto out;
	}
	memcpy(ca->cert_der, der, (size_t)n);
	ca->cert_len = (size_t)n;
	if (ASN1_TIME_to_tm(X509_get0_notAfter(ca->cert), &tm) != 1) {
		fgp_ssl_err(err, errlen, "%s has an unreadable notAfter", crtpath);
		goto out;
	}
	ca->not_after = (int64_t)timegm(&tm);
	if (ca->not_after <= ca->host->now(ca->host->ctx))
		ca_log(ca, FG_LEVEL_ERROR, NULL, "CA certificate %s has expired; issuance will fail until it is replaced",
		       crtpath);
	rc = 0;
out:
	OPENSSL_free(der);
	return rc;
}

static void ca_close(void *state)
{
	struct local_ca *ca = state;

	if (ca == NULL)
		return;
	EVP_PKEY_free(ca->key);
	EVP_PKEY_free(ca->scratch);
	X509_free(ca->scratch_cert);
	X509_free(ca->cert);
	X509_NAME_free(ca->subject);
	ASN1_OCTET_STRING_free(ca->ski);
	X509_ALGOR_free(ca->sigalg);
	free(ca->cert_der);
	free(ca);
}

/* 1 when a crl_url/ocsp_url setting is set but unusable: not http(s),
 * too long, or with characters an IA5String URI cannot carry. */
static int url_bad(const char *u)
{
	if (u == NULL || u[0] == '\0')
		return 0;
	if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
		return 1;
	if (strlen(u) > 1000)
		return 1;
	for (const char *p = u; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
			return 1;
	return 0;
}

/* Open the CA from settings (see the file comment); with create = "yes",
 * make it first when ca_dir holds no ca.key. */
static int ca_open(const struct fg_host *host, const struct fg_kv *kv, size_t n, void **state,
		   char *err, size_t errlen)
{
	struct local_ca *ca = NULL;
	const char *sd = fg_kv_get(kv, n, "state_dir"), *cd = fg_kv_get(kv, n, "ca_dir");
	const char *kt = fg_kv_get(kv, n, "key_type"), *cn = fg_kv_get(kv, n, "ca_name");
	const char *cv = fg_kv_get(kv, n, "ca_validity"), *create = fg_kv_get(kv, n, "create");
	const char *nm = fg_kv_get(kv, n, "name");
	const char *cu = fg_kv_get(kv, n, "crl_url"), *ou = fg_kv_get(kv, n, "ocsp_url");
	const char *crv = fg_kv_get(kv, n, "crl_validity"), *ocv = fg_kv_get(kv, n, "ocsp_validity");
	char keypath[PATH_MAX + 16];

	*state = NULL;
	if (host == NULL || host->abi_version != FG_PLUGIN_ABI_VERSION ||
	    host->struct_size < sizeof(struct fg_host) || host->random == NULL || host->now == NULL ||
	    host->job_get == NULL || host->job_put == NULL || host->serial_reserve == NULL ||
	    host->state_put == NULL) {
		snprintf(err, errlen, "the host speaks plugin ABI %u (host table of %u bytes); this local CA plugin needs ABI %d: rebuild the plugin",
			 host ? host->abi_version : 0, host ? host->struct_size : 0, FG_PLUGIN_ABI_VERSION);
		return -1;
	}
	if (sd == NULL || sd[0] != '/') {
		snprintf(err, errlen, "setting state_dir must be an absolute path (got '%s')", sd ? sd : "");
		return -1;
	}
	cd = cd && cd[0] ? cd : "ca";
	kt = kt && kt[0] ? kt : "p256";
	cn = cn && cn[0] ? cn : "fleetgate local CA";
	long long validity = parse_span(cv && cv[0] ? cv : "10y");
	if (validity <= 0) {
		snprintf(err, errlen, "ca_validity '%s' is not a duration like 10y, 3650d, 12h or 86400 (at most 100y)",
			 cv);
		return -1;
	}
	long long crl_validity = parse_span(crv && crv[0] ? crv : "7d");
	long long ocsp_validity = parse_span(ocv && ocv[0] ? ocv : "1h");
	if (crl_validity <= 0 || ocsp_validity <= 0) {
		snprintf(err, errlen, "%s '%s' is not a duration like 7d, 12h or 600 (seconds)",
			 crl_validity <= 0 ? "crl_validity" : "ocsp_validity", crl_validity <= 0 ? crv : ocv);
		return -1;
	}
	if (url_bad(cu) || url_bad(ou)) {
		snprintf(err, errlen, "%s '%s' is not an http:// or https:// URL of printable ASCII (at most 1000 bytes), e.g. \"http://pki.example.com:7780/crl/local.crl\"",
			 url_bad(cu) ? "crl_url" : "ocsp_url", url_bad(cu) ? cu : ou);
		return -1;
	}
	if ((ca = calloc(1, sizeof *ca)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ca->host = host;
	ca->remote = FG_HOST_HAS_SIGNER(host) && !(create && strcmp(create, "yes") == 0);
	ca->crl_validity = crl_validity;
	ca->ocsp_validity = ocsp_validity;
	snprintf(ca->crl_url, sizeof ca->crl_url, "%s", cu ? cu : "");
	snprintf(ca->ocsp_url, sizeof ca->ocsp_url, "%s", ou ? ou : "");
	snprintf(ca->name, sizeof ca->name, "%s", nm ? nm : "local");
	/* ca_dir is relative to state_dir; an absolute one is taken as is. */
	int w = cd[0] == '/' ? snprintf(ca->dir, sizeof ca->dir, "%s", cd)
			     : snprintf(ca->dir, sizeof ca->dir, "%s/%s", sd, cd);
	if (w < 0 || (size_t)w >= sizeof ca->dir) {
		snprintf(err, errlen, "ca_dir path is too long");
		goto fail;
	}
	snprintf(keypath, sizeof keypath, "%s/ca.key", ca->dir);
	if (create && strcmp(create, "yes") == 0 && access(keypath, F_OK) != 0 &&
	    ca_create(ca, kt, cn, validity, err, errlen) != 0)
		goto fail;
	if (ca_load(ca, err, errlen) != 0)
		goto fail;
	*state = ca;
	return 0;
fail:
	ca_close(ca);
	return -1;
}

/* OpenSSL short names accepted in ext_key_usage, besides dotted OIDs. */
static ASN1_OBJECT *eku_object(const char *s)
{
	static const char *const names[] = {
		"clientAuth", "serverAuth", "codeSigning", "emailProtection", "timeStamping", "OCSPSigning",
	};

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(s, names[i]) == 0)
			return OBJ_txt2obj(s, 0);
	if (s[0] >= '0' && s[0] <= '2' && s[1] == '.')
		return OBJ_txt2obj(s, 1);
	return NULL;
}

/* extendedKeyUsage from names or OIDs; -1 with a message for the device
 * on a bad one (a request error), -2 on an OpenSSL failure. */
static int add_eku(X509 *x, const struct fg_issue_request *req, char *msg, size_t msglen)
{
	EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
	int rc = -2;

	if (eku == NULL)
		return -2;
	for (size_t i = 0; i < req->n_eku; i++) {
		ASN1_OBJECT *o = eku_object(req->ext_key_usage[i]);
		if (o == NULL) {
			snprintf(msg, msglen, "extended key usage '%s' is neither a known name (clientAuth, serverAuth, codeSigning, emailProtection, timeStamping, OCSPSigning) nor a dotted OID",
				 req->ext_key_usage[i]);
			ERR_clear_error();
			rc = -1;
			goto out;
		}
		if (sk_ASN1_OBJECT_push(eku, o) <= 0) {
			ASN1_OBJECT_free(o);
			goto out;
		}
	}
	rc = X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) == 1 ? 0 : -2;
out:
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	return rc;
}

/* One IA5String general name (dNSName or rfc822Name) onto gens. */
static int push_ia5(GENERAL_NAMES *gens, int type, const char *v)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();

	if (g == NULL || s == NULL || ASN1_STRING_set(s, v, -1) != 1) {
		GENERAL_NAME_free(g);
		ASN1_IA5STRING_free(s);
		return -2;
	}
	GENERAL_NAME_set0_value(g, type, s);
	if (sk_GENERAL_NAME_push(gens, g) <= 0) {
		GENERAL_NAME_free(g);
		return -2;
	}
	return 0;
}

/* A SAN string must be non-empty printable ASCII (IA5, no controls). */
static int ia5_ok(const char *s)
{
	if (s == NULL || *s == '\0')
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

/* subjectAltName from the request's DNS names, IP addresses and emails;
 * critical when the subject is empty (RFC 5280 4.2.1.6). Returns 0 (also
 * when there are no names), -1 with a message for a bad name, -2 on an
 * OpenSSL failure. */
static int add_san(X509 *x, const struct fg_issue_request *req, int critical, char *msg, size_t msglen)
{
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	int rc = -2;

	if (gens == NULL)
		return -2;
	for (size_t i = 0; i < req->n_dns; i++) {
		if (!ia5_ok(req->dns_names[i])) {
			snprintf(msg, msglen, "DNS name '%s' is empty or not ASCII", req->dns_names[i]);
			rc = -1;
			goto out;
		}
		if (push_ia5(gens, GEN_DNS, req->dns_names[i]) != 0)
			goto out;
	}
	for (size_t i = 0; i < req->n_ip; i++) {
		ASN1_OCTET_STRING *ip = a2i_IPADDRESS(req->ip_names[i]);
		GENERAL_NAME *g = NULL;
		if (ip == NULL) {
			snprintf(msg, msglen, "IP address '%s' is not an IPv4 or IPv6 address", req->ip_names[i]);
			ERR_clear_error();
			rc = -1;
			goto out;
		}
		if ((g = GENERAL_NAME_new()) == NULL) {
			ASN1_OCTET_STRING_free(ip);
			goto out;
		}
		GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
		if (sk_GENERAL_NAME_push(gens, g) <= 0) {
			GENERAL_NAME_free(g);
			goto out;
		}
	}
	for (size_t i = 0; i < req->n_email; i++) {
		if (!ia5_ok(req->emails[i]) || strchr(req->emails[i], '@') == NULL) {
			snprintf(msg, msglen, "email '%s' is not an ASCII address", req->emails[i]);
			rc = -1;
			goto out;
		}
		if (push_ia5(gens, GEN_EMAIL, req->emails[i]) != 0)
			goto out;
	}
	rc = 0;
	if (sk_GENERAL_NAME_num(gens) > 0 &&
	    X509_add1_ext_i2d(x, NID_subject_alt_name, gens, critical, X509V3_ADD_DEFAULT) != 1)
		rc = -2;
out:
	GENERAL_NAMES_free(gens);
	return rc;
}

/* A uniformResourceIdentifier general name, or NULL. */
static GENERAL_NAME *uri_name(const char *uri)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();

	if (g == NULL || s == NULL || ASN1_STRING_set(s, uri, -1) != 1) {
		GENERAL_NAME_free(g);
		ASN1_IA5STRING_free(s);
		return NULL;
	}
	GENERAL_NAME_set0_value(g, GEN_URI, s);
	return g;
}

/* cRLDistributionPoints with one full-name URI (RFC 5280 4.2.1.13). */
static int add_crl_dp(X509 *x, const char *uri)
{
	CRL_DIST_POINTS *cdp = sk_DIST_POINT_new_null();
	DIST_POINT *dp = DIST_POINT_new();
	GENERAL_NAME *g = uri_name(uri);
	int rc = -1;

	if (cdp == NULL || dp == NULL || g == NULL || (dp->distpoint = DIST_POINT_NAME_new()) == NULL ||
	    (dp->distpoint->name.fullname = GENERAL_NAMES_new()) == NULL)
		goto out;
	dp->distpoint->type = 0;           /* fullName */
	if (sk_GENERAL_NAME_push(dp->distpoint->name.fullname, g) <= 0)
		goto out;
	g = NULL;
	if (sk_DIST_POINT_push(cdp, dp) <= 0)
		goto out;
	dp = NULL;
	rc = X509_add1_ext_i2d(x, NID_crl_distribution_points, cdp, 0, X509V3_ADD_DEFAULT) == 1 ? 0 : -1;
out:
	GENERAL_NAME_free(g);
	DIST_POINT_free(dp);
	CRL_DIST_POINTS_free(cdp);
	return rc;
}

/* authorityInfoAccess with one id-ad-ocsp URI (RFC 5280 4.2.2.1). */
static int add_aia_ocsp(X509 *x, const char *uri)
{
	AUTHORITY_INFO_ACCESS *aia = sk_ACCESS_DESCRIPTION_new_null();
	ACCESS_DESCRIPTION *ad = ACCESS_DESCRIPTION_new();
	int rc = -1;

	if (aia == NULL || ad == NULL)
		goto out;
	ASN1_OBJECT_free(ad->method);
	ad->method = OBJ_nid2obj(NID_ad_OCSP);
	GENERAL_NAME_free(ad->location);
	if ((ad->location = uri_name(uri)) == NULL || sk_ACCESS_DESCRIPTION_push(aia, ad) <= 0)
		goto out;
	ad = NULL;
	rc = X509_add1_ext_i2d(x, NID_info_access, aia, 0, X509V3_ADD_DEFAULT) == 1 ? 0 : -1;
out:
	ACCESS_DESCRIPTION_free(ad);
	AUTHORITY_INFO_ACCESS_free(aia);
	return rc;
}

/* Build the unsigned leaf for req: everything but the serial (set by the
 * caller after reservation) and the signature. Request errors set
 * *rejected; NULL with msg on any failure. */
static X509 *build_leaf(struct local_ca *ca, const struct fg_issue_request *req, int *rejected,
			char *msg, size_t msglen)
{
	const unsigned char *p = req->csr_der;
	X509_REQ *csr = NULL;
	X509 *x = NULL;
	int has_cn = req->subject_cn != NULL && req->subject_cn[0] != '\0';
	int64_t nb = req->not_before, na = req->not_after;
	int r;

	*rejected = 1;
	if (!has_cn && req->n_dns + req->n_ip + req->n_email == 0) {
		snprintf(msg, msglen, "the request names nothing: no subject CN and no alternative names");
		return NULL;
	}
	if (req->key_usage & ~(uint32_t)(FG_KU_MAX - 1)) {
		snprintf(msg, msglen, "key usage bits 0x%x are not known to this CA", (unsigned)req->key_usage);
		return NULL;
	}
	if (na > ca->not_after)
		na = ca->not_after;
	if (nb >= na) {
		snprintf(msg, msglen, "empty validity window: notBefore %lld is not before notAfter %lld (the CA expires at %lld)",
			 (long long)nb, (long long)na, (long long)ca->not_after);
		return NULL;
	}
	if (req->csr_der == NULL || req->csr_len == 0 || req->csr_len > LONG_MAX ||
	    (csr = d2i_X509_REQ(NULL, &p, (long)req->csr_len)) == NULL ||
	    p != req->csr_der + req->csr_len || X509_REQ_get0_pubkey(csr) == NULL) {
		fgp_ssl_err(msg, msglen, "the CSR cannot be parsed");
		goto fail;
	}
	*rejected = 0;
	if ((x = X509_new()) == NULL || X509_set_version(x, X509_VERSION_3) != 1 ||
	    ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na) == NULL ||
	    X509_set_issuer_name(x, ca->subject) != 1 ||
	    X509_set_pubkey(x, X509_REQ_get0_pubkey(csr)) != 1) {
		fgp_ssl_err(msg, msglen, "cannot build the certificate");
		goto fail;
	}
	if (has_cn && X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
						 (const unsigned char *)req->subject_cn, -1, -1, 0) != 1) {
		fgp_ssl_err(msg, msglen, "subject CN '%s' is not valid (UTF-8, at most 64 characters)",
			req->subject_cn);
		*rejected = 1;
		goto fail;
	}
	if (add_basic_constraints(x, 0, -1) != 0 ||
	    (req->key_usage != 0 && add_key_usage(x, req->key_usage) != 0)) {
		fgp_ssl_err(msg, msglen, "cannot add the certificate's constraints");
		goto fail;
	}
	if (req->n_eku > 0 && (r = add_eku(x, req, msg, msglen)) != 0) {
		if (r == -2)
			fgp_ssl_err(msg, msglen, "cannot add the extended key usage");
		*rejected = r == -1;
		goto fail;
	}
	if ((r = add_san(x, req, !has_cn, msg, msglen)) != 0) {
		if (r == -2)
			fgp_ssl_err(msg, msglen, "cannot add the subject alternative names");
		*rejected = r == -1;
		goto fail;
	}
	if (add_ski(x, NULL) != 0 || add_aki(x, ca->ski) != 0) {
		fgp_ssl_err(msg, msglen, "cannot add the key identifiers");
		goto fail;
	}
	if ((ca->crl_url[0] && add_crl_dp(x, ca->crl_url) != 0) ||
	    (ca->ocsp_url[0] && add_aia_ocsp(x, ca->ocsp_url) != 0)) {
		fgp_ssl_err(msg, msglen, "cannot add the CRL distribution point or OCSP URL");
		goto fail;
	}
	X509_REQ_free(csr);
	return x;
fail:
	X509_REQ_free(csr);
	X509_free(x);
	return NULL;
}

/* Reserve a fresh serial with the host (redrawing when one is taken) and
 * set it on x. 0, or -1 with msg. */
static int reserve_serial(struct local_ca *ca, X509 *x, char *msg, size_t msglen)
{
	char hex[48];

	for (int attempt = 0; attempt < SERIAL_RESERVE_TRIES; attempt++) {
		ASN1_INTEGER *serial = draw_serial(ca);
		if (serial == NULL || serial_hex(serial, hex, sizeof hex) != 0) {
			ASN1_INTEGER_free(serial);
			snprintf(msg, msglen, "cannot draw a random serial");
			return -1;
		}
		int r = ca->host->serial_reserve(ca->host->ctx, hex);
		if (r == 0) {
			r = X509_set_serialNumber(x, serial);
			ASN1_INTEGER_free(serial);
			if (r != 1) {
				fgp_ssl_err(msg, msglen, "cannot set the serial");
				return -1;
			}
			return 0;
		}
		ASN1_INTEGER_free(serial);
		if (r < 0) {
			snprintf(msg, msglen, "cannot reserve serial %s in the store", hex);
			return -1;
		}
		ca_log(ca, FG_LEVEL_WARN, NULL, "serial %s is taken; drawing another", hex);
	}
	snprintf(msg, msglen, "no free serial after %d draws", SERIAL_RESERVE_TRIES);
	return -1;
}

/* Encode x unsigned for the write-ahead record. OpenSSL offers no setter
 * for an unsigned certificate's two AlgorithmIdentifiers, and an empty one
 * cannot be encoded, so both are filled here with exactly what X509_sign
 * will write (the objects are x's own, never const: the cast only undoes
 * the getters' const). Returns the DER length and *der (OPENSSL_free), or
 * -1. */
static int encode_unsigned(const struct local_ca *ca, X509 *x, unsigned char **der)
{
	const X509_ALGOR *outer = NULL;

	X509_get0_signature(NULL, &outer, x);
	if (X509_ALGOR_copy((X509_ALGOR *)X509_get0_tbs_sigalg(x), ca->sigalg) != 1 ||
	    X509_ALGOR_copy((X509_ALGOR *)outer, ca->sigalg) != 1)
		return -1;
	*der = NULL;
	return i2d_X509(x, der);
}

/* Parse a write-ahead record back and check that it was made by this CA
 * (its AKI is this CA's key id). NULL with msg otherwise. */
static X509 *decode_unsigned(const struct local_ca *ca, const unsigned char *der, size_t len,
			     char *msg, size_t msglen)
{
	const unsigned char *p = der;
	X509 *x = len <= LONG_MAX ? d2i_X509(NULL, &p, (long)len) : NULL;

	if (x == NULL || p != der + len) {
		fgp_ssl_err(msg, msglen, "the job's write-ahead record is not a certificate");
		X509_free(x);
		return NULL;
	}
	const ASN1_OCTET_STRING *akid = X509_get0_authority_key_id(x);
	if (akid == NULL || ASN1_OCTET_STRING_cmp(akid, ca->ski) != 0 ||
	    X509_NAME_cmp(X509_get_issuer_name(x), ca->subject) != 0) {
		snprintf(msg, msglen, "the job's write-ahead record names another CA (was backend %s's CA replaced?); the job cannot be resumed",
			 ca->name);
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Copy a DER blob into malloc'd memory for the host. */
static unsigned char *dup_der(const unsigned char *der, size_t len)
{
	unsigned char *p = malloc(len ? len : 1);
	if (p != NULL)
		memcpy(p, der, len);
	return p;
}

/* The span of the TBSCertificate inside a DER certificate (signed or
 * not): the first element of the outer SEQUENCE, read with OpenSSL's DER
 * header parser. 0 with *tbs and *tbslen, or -1. */
static int tbs_span(const unsigned char *der, size_t len, const unsigned char **tbs, size_t *tbslen)
{
	const unsigned char *p = der, *q;
	long l;
	int tag, cls;

	if (len > LONG_MAX || (ASN1_get_object(&p, &l, &tag, &cls, (long)len) & 0x80) || tag != V_ASN1_SEQUENCE)
		return -1;
	q = p;
	if ((ASN1_get_object(&q, &l, &tag, &cls, (long)(len - (size_t)(p - der))) & 0x80) ||
	    tag != V_ASN1_SEQUENCE)
		return -1;
	*tbs = p;
	*tbslen = (size_t)(q - p) + (size_t)l;
	return 0;
}

/* Signer mode: have the signer sign rec (the write-ahead record, an
 * unsigned certificate of serial hex for profile) and check that what
 * comes back carries exactly rec's to-be-signed bytes. On success *out is
 * the signed DER (malloc'd) and *outlen its length. 0, 1 when the signer
 * refused, -1 on failure; msg says why. */
static int sign_by_signer(const struct local_ca *ca, const unsigned char *rec, size_t reclen, const char *hex,
			  const char *profile, unsigned char **out, size_t *outlen, char *msg, size_t msglen)
{
	const unsigned char *ta, *tb;
	size_t la, lb;
	int rc = remote_sign(ca, FG_SIGN_CERT, profile, hex, rec, reclen, out, outlen, msg, msglen);

	if (rc != 0)
		return rc;
	if (tbs_span(rec, reclen, &ta, &la) != 0 || tbs_span(*out, *outlen, &tb, &lb) != 0 || la != lb ||
	    memcmp(ta, tb, la) != 0) {
		snprintf(msg, msglen, "the signer process answered a certificate that is not the one asked for; nothing was issued");
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

/* Issue (or resume issuing) the job's certificate; see the file comment for
 * the write-ahead record. Always returns 0: the outcome is in res->status,
 * REJECTED for a request the CA will never sign, ERROR (retried) for
 * anything that may pass later. */
static int ca_issue(void *state, const struct fg_issue_request *req, struct fg_issue_result *res)
{
	struct local_ca *ca = state;
	unsigned char *rec = NULL, *der = NULL, *signed_der = NULL;
	size_t reclen = 0, signed_len = 0;
	X509 *x = NULL;
	char hex[48] = "";
	int n, rejected = 0;

	memset(res, 0, sizeof *res);
	res->status = FG_ISSUE_ERROR;
	res->retry_after = RETRY_SECONDS;
	if (req == NULL || req->struct_size < sizeof(struct fg_issue_request)) {
		snprintf(res->message, sizeof res->message, "the host's issue request is from another plugin ABI; rebuild the plugin");
		res->status = FG_ISSUE_REJECTED;
		return 0;
	}
	int r = ca->host->job_get(req->job, "tbs", &rec, &reclen);
	if (r < 0) {
		snprintf(res->message, sizeof res->message, "cannot read the job's write-ahead record from the store");
		return 0;
	}
	if (r == 1) {
		x = decode_unsigned(ca, rec, reclen, res->message, sizeof res->message);
		if (x == NULL) {
			res->status = FG_ISSUE_REJECTED;
			goto out;
		}
		serial_hex(X509_get0_serialNumber(x), hex, sizeof hex);
		ca_log(ca, FG_LEVEL_INFO, req->request_id, "resuming issuance of serial %s from its write-ahead record",
		       hex);
	} else {
		x = build_leaf(ca, req, &rejected, res->message, sizeof res->message);
		if (x == NULL) {
			if (rejected)
				res->status = FG_ISSUE_REJECTED;
			goto out;
		}
		if (reserve_serial(ca, x, res->message, sizeof res->message) != 0)
			goto out;
		serial_hex(X509_get0_serialNumber(x), hex, sizeof hex);
		n = encode_unsigned(ca, x, &der);
		if (n <= 0) {
			fgp_ssl_err(res->message, sizeof res->message, "cannot encode the certificate of serial %s", hex);
			goto out;
		}
		if (ca->host->job_put(req->job, "tbs", der, (size_t)n) != 0) {
			snprintf(res->message, sizeof res->message,
				 "cannot record serial %s in the store before signing; nothing was signed", hex);
			goto out;
		}
		reclen = (size_t)n;
	}
	if (ca->remote) {
		/* The record goes to the signer as it is in the store. */
		r = sign_by_signer(ca, rec ? rec : der, reclen, hex, req->profile, &signed_der, &signed_len,
				   res->message, sizeof res->message);
		if (r != 0) {
			if (r > 0)
				res->status = FG_ISSUE_REJECTED;
			else
				res->retry_after = 1;   /* the signer restarts within a second */
			goto out;
		}
		res->cert_der = signed_der;
		signed_der = NULL;
		n = (int)signed_len;
	} else {
		OPENSSL_free(der);
		der = NULL;
		if (X509_sign(x, ca->key, ca->md) <= 0) {
			fgp_ssl_err(res->message, sizeof res->message, "cannot sign serial %s", hex);
			goto out;
		}
		n = i2d_X509(x, &der);
		if (n <= 0) {
			fgp_ssl_err(res->message, sizeof res->message, "cannot encode the signed certificate");
			goto out;
		}
		res->cert_der = dup_der(der, (size_t)n);
	}
	res->chain_der = calloc(1, sizeof *res->chain_der);
	res->chain_len = calloc(1, sizeof *res->chain_len);
	if (res->cert_der == NULL || res->chain_der == NULL || res->chain_len == NULL ||
	    (res->chain_der[0] = dup_der(ca->cert_der, ca->cert_len)) == NULL) {
		fg_issue_result_clear(res);
		res->status = FG_ISSUE_ERROR;
		res->retry_after = RETRY_SECONDS;
		snprintf(res->message, sizeof res->message, "out of memory");
		goto out;
	}
	res->cert_len = (size_t)n;
	res->chain_len[0] = ca->cert_len;
	res->n_chain = 1;
	res->status = FG_ISSUE_OK;
	res->retry_after = 0;
	ca_log(ca, FG_LEVEL_DEBUG, req->request_id, "signed serial %s", hex);
out:
	OPENSSL_free(der);
	free(rec);
	free(signed_der);
	X509_free(x);
	return 0;
}

/* Record the revocation of a certificate this CA issued (checked by its
 * signature) as plugin state "revoked:<serial>" = "<reason> <unix time>".
 * Revoking again overwrites the record. The CRL is a later addition. */
static int ca_revoke(void *state, const unsigned char *cert_der, size_t cert_len,
		     enum fg_revoke_reason reason, char *err, size_t errlen)
{
	struct local_ca *ca = state;
	const unsigned char *p = cert_der;
	X509 *x = cert_len <= LONG_MAX ? d2i_X509(NULL, &p, (long)cert_len) : NULL;
	char hex[48], key[96], val[64];
	int rc = -1;

	if (x == NULL) {
		fgp_ssl_err(err, errlen, "cannot revoke: not a DER certificate");
		return -1;
	}
	if (serial_hex(X509_get0_serialNumber(x), hex, sizeof hex) != 0) {
		snprintf(err, errlen, "cannot revoke: the certificate's serial is unreadable");
		goto out;
	}
	if (X509_verify(x, X509_get0_pubkey(ca->cert)) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "cannot revoke serial %s: it was not issued by the CA in %s", hex, ca->dir);
		goto out;
	}
	snprintf(key, sizeof key, "revoked:%s", hex);
	int n = snprintf(val, sizeof val, "%d %lld", (int)reason, (long long)ca->host->now(ca->host->ctx));
	if (ca->host->state_put(ca->host->ctx, key, (const unsigned char *)val, (size_t)n) != 0) {
		snprintf(err, errlen, "cannot record the revocation of serial %s in the store", hex);
		goto out;
	}
	ca_log(ca, FG_LEVEL_INFO, NULL, "revoked serial %s (reason %d)", hex, (int)reason);
	rc = 0;
out:
	X509_free(x);
	return rc;
}

/* The chain leaves are issued under: the CA certificate alone. */
static int ca_cacerts(void *state, struct fg_cert_list *out, char *err, size_t errlen)
{
	struct local_ca *ca = state;

	memset(out, 0, sizeof *out);
	out->der = calloc(1, sizeof *out->der);
	out->len = calloc(1, sizeof *out->len);
	if (out->der == NULL || out->len == NULL || (out->der[0] = dup_der(ca->cert_der, ca->cert_len)) == NULL) {
		fg_cert_list_clear(out);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	out->len[0] = ca->cert_len;
	out->n = 1;
	return 0;
}

/* ---- CRL and OCSP (the gateway's HTTP side) ---- */

/* The reason code (RFC 5280 5.3.1) in this CA's revoke record for serial,
 * 0 (unspecified) when there is none or it cannot be read: the host's store
 * decides whether and when, the record only adds why. */
static int revoke_reason(const struct local_ca *ca, const char *hex)
{
	char key[96], buf[32];
	unsigned char *v = NULL;
	size_t len = 0;
	int reason = 0;

	if (ca->host->state_get == NULL)
		return 0;
	snprintf(key, sizeof key, "revoked:%s", hex);
	if (ca->host->state_get(ca->host->ctx, key, &v, &len) == 1 && v != NULL) {
		size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
		memcpy(buf, v, n);
		buf[n] = '\0';
		reason = atoi(buf);
		/* 7 is unused; 8 (removeFromCRL) belongs to delta CRLs only */
		if (reason < 0 || reason > 10 || reason == 7 || reason == 8)
			reason = 0;
	}
	free(v);
	return reason;
}

/* A serial as the store writes it (hex, at most 40 digits) to an
 * ASN1_INTEGER, or NULL when it is not such hex. */
static ASN1_INTEGER *serial_from_hex(const char *hex)
{
	BIGNUM *bn = NULL;
	ASN1_INTEGER *ai = NULL;
	size_t n = hex ? strlen(hex) : 0;

	if (n == 0 || n > 40 || strspn(hex, "0123456789abcdefABCDEF") != n)
		return NULL;
	if (BN_hex2bn(&bn, hex) == (int)n)
		ai = BN_to_ASN1_INTEGER(bn, NULL);
	BN_free(bn);
	return ai;
}

/* Whether the host lends state_incr (hosts built before it was appended
 * do not). */
static int have_state_incr(const struct local_ca *ca)
{
	return ca->host->struct_size >= offsetof(struct fg_host, state_incr) + sizeof ca->host->state_incr &&
	       ca->host->state_incr != NULL;
}

/* The next CRL number, a new BIGNUM or NULL with err. With state_incr the
 * host draws it atomically across the gateway and the CLI, so it is taken
 * (and never reused) even if the CRL then fails; *recorded is set to 1.
 * An older host gives "crl_number" plus one (1 for the first CRL), which
 * the caller records once the CRL is signed: then two processes making a
 * CRL in the same instant could use one number. */
static BIGNUM *next_crl_number(const struct local_ca *ca, int *recorded, char *err, size_t errlen)
{
	unsigned char *v = NULL;
	size_t len = 0;
	char buf[64];
	BIGNUM *num = NULL;
	*recorded = 0;
	if (have_state_incr(ca)) {
		uint64_t next = 0;
		if (ca->host->state_incr(ca->host->ctx, "crl_number", &next) != 0) {
			snprintf(err, errlen,
				 "cannot draw the next CRL number of backend %s from the store; check the gateway log and retry",
				 ca->name);
			return NULL;
		}
		snprintf(buf, sizeof buf, "%llu", (unsigned long long)next);
		if (BN_dec2bn(&num, buf) == 0) {
			fgp_ssl_err(err, errlen, "cannot compute the next CRL number");
			return NULL;
		}
		*recorded = 1;
		return num;
	}
	int r = ca->host->state_get ? ca->host->state_get(ca->host->ctx, "crl_number", &v, &len) : 0;

	if (r < 0) {
		snprintf(err, errlen, "cannot read the CRL number of backend %s from the store; check the store and retry",
			 ca->name);
		return NULL;
	}
	if (r == 1 && v != NULL && len > 0 && len < sizeof buf) {
		memcpy(buf, v, len);
		buf[len] = '\0';
		if (strspn(buf, "0123456789") != len || BN_dec2bn(&num, buf) != (int)len) {
			BN_free(num);
			num = NULL;
		}
	}
	free(v);
	if (r == 1 && num == NULL) {
		snprintf(err, errlen, "plugin state crl_number of backend %s is not a decimal number; the store is damaged",
			 ca->name);
		return NULL;
	}
	if (num == NULL && (num = BN_new()) != NULL)
		BN_zero(num);
	if (num == NULL || BN_add_word(num, 1) != 1) {
		BN_free(num);
		fgp_ssl_err(err, errlen, "cannot compute the next CRL number");
		return NULL;
	}
	return num;
}

/* One revoked entry: serial, revocationDate and, unless unspecified (RFC
 * 5280 5.3.1 says to leave it out then), a reasonCode. 0 or -1 with err. */
static int crl_add_entry(const struct local_ca *ca, X509_CRL *crl, const struct fg_revoked *e,
			 char *err, size_t errlen)
{
	X509_REVOKED *r = X509_REVOKED_new();
	ASN1_INTEGER *sn = serial_from_hex(e->serial_hex);
	ASN1_TIME *t = ASN1_TIME_set(NULL, (time_t)e->revoked_at);
	ASN1_ENUMERATED *why = NULL;
	int reason = e->serial_hex ? revoke_reason(ca, e->serial_hex) : 0, rc = -1;

	if (sn == NULL) {
		ERR_clear_error();
		snprintf(err, errlen, "revoked serial '%s' from the store is not hex; the store is damaged",
			 e->serial_hex ? e->serial_hex : "");
		goto out;
	}
	if (r == NULL || t == NULL || X509_REVOKED_set_serialNumber(r, sn) != 1 ||
	    X509_REVOKED_set_revocationDate(r, t) != 1)
		goto ssl;
	if (reason != 0 && ((why = ASN1_ENUMERATED_new()) == NULL || ASN1_ENUMERATED_set(why, reason) != 1 ||
			    X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, why, 0, X509V3_ADD_DEFAULT) != 1))
		goto ssl;
	if (X509_CRL_add0_revoked(crl, r) != 1)
		goto ssl;
	r = NULL;
	rc = 0;
	goto out;
ssl:
	fgp_ssl_err(err, errlen, "cannot add serial %s to the CRL", e->serial_hex);
out:
	ASN1_ENUMERATED_free(why);
	ASN1_TIME_free(t);
	ASN1_INTEGER_free(sn);
	X509_REVOKED_free(r);
	return rc;
}

/* Signer mode: encode crl (signed with the scratch key) and have the
 * signer sign it; the answer must verify under the CA certificate. *out
 * (OPENSSL_free) and *outlen on success. 0 or -1 with err. */
static int remote_sign_crl(const struct local_ca *ca, X509_CRL *crl, unsigned char **out, int *outlen,
			   char *err, size_t errlen)
{
	unsigned char *in = NULL, *got = NULL;
	size_t gotlen = 0;
	X509_CRL *back = NULL;
	char why[512];
	int n, r, rc = -1;

	if (X509_CRL_sign(crl, ca->scratch, EVP_sha256()) <= 0 || (n = i2d_X509_CRL(crl, &in)) <= 0) {
		fgp_ssl_err(err, errlen, "cannot encode the CRL of backend %s", ca->name);
		return -1;
	}
	r = remote_sign(ca, FG_SIGN_CRL, NULL, NULL, in, (size_t)n, &got, &gotlen, why, sizeof why);
	if (r != 0) {
		snprintf(err, errlen, "the signer process %s the CRL of backend %s: %s",
			 r > 0 ? "refused" : "could not sign", ca->name, why);
		goto out;
	}
	const unsigned char *p = got;
	back = gotlen <= INT_MAX ? d2i_X509_CRL(NULL, &p, (long)gotlen) : NULL;
	if (back == NULL || p != got + gotlen || X509_CRL_verify(back, X509_get0_pubkey(ca->cert)) != 1 ||
	    (*out = OPENSSL_malloc(gotlen)) == NULL) {
		fgp_ssl_err(err, errlen, "the signer process answered a CRL that does not verify under backend %s's CA",
			    ca->name);
		goto out;
	}
	memcpy(*out, got, gotlen);
	*outlen = (int)gotlen;
	rc = 0;
out:
	X509_CRL_free(back);
	OPENSSL_free(in);
	free(got);
	return rc;
}

/* See make_crl in plugin.h: a v2 CRL of list, valid crl_validity from now,
 * with authorityKeyIdentifier and the next cRLNumber, which is stored only
 * once the CRL is signed (a failed attempt burns no number). */
static int ca_make_crl(void *state, const struct fg_revoked *list, size_t n, int64_t now,
		       unsigned char **der, size_t *len, char *err, size_t errlen)
{
	struct local_ca *ca = state;
	X509_CRL *crl = NULL;
	ASN1_TIME *tu = NULL, *nu = NULL;
	BIGNUM *num = NULL;
	ASN1_INTEGER *numi = NULL;
	AUTHORITY_KEYID *akid = NULL;
	unsigned char *out = NULL;
	char *dec = NULL;
	int k, rc = -1, recorded = 0;

	*der = NULL;
	*len = 0;
	if ((num = next_crl_number(ca, &recorded, err, errlen)) == NULL)
		return -1;
	if ((crl = X509_CRL_new()) == NULL || X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
	    X509_CRL_set_issuer_name(crl, ca->subject) != 1 ||
	    (tu = ASN1_TIME_set(NULL, (time_t)now)) == NULL ||
	    (nu = ASN1_TIME_set(NULL, (time_t)(now + ca->crl_validity))) == NULL ||
	    X509_CRL_set1_lastUpdate(crl, tu) != 1 || X509_CRL_set1_nextUpdate(crl, nu) != 1) {
		fgp_ssl_err(err, errlen, "cannot start the CRL of backend %s", ca->name);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (crl_add_entry(ca, crl, &list[i], err, errlen) != 0)
			goto out;
	if (X509_CRL_sort(crl) != 1 || (akid = AUTHORITY_KEYID_new()) == NULL ||
	    (akid->keyid = ASN1_OCTET_STRING_dup(ca->ski)) == NULL ||
	    X509_CRL_add1_ext_i2d(crl, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT) != 1 ||
	    (numi = BN_to_ASN1_INTEGER(num, NULL)) == NULL ||
	    X509_CRL_add1_ext_i2d(crl, NID_crl_number, numi, 0, X509V3_ADD_DEFAULT) != 1) {
		fgp_ssl_err(err, errlen, "cannot add the CRL's extensions");
		goto out;
	}
	if (ca->remote) {
		if (remote_sign_crl(ca, crl, &out, &k, err, errlen) != 0)
			goto out;
	} else if (X509_CRL_sign(crl, ca->key, ca->md) <= 0 || (k = i2d_X509_CRL(crl, &out)) <= 0) {
		fgp_ssl_err(err, errlen, "cannot sign the CRL of backend %s", ca->name);
		goto out;
	}
	if ((dec = BN_bn2dec(num)) == NULL ||
	    (!recorded &&
	     ca->host->state_put(ca->host->ctx, "crl_number", (const unsigned char *)dec, strlen(dec)) != 0)) {
		snprintf(err, errlen, "cannot record CRL number %s of backend %s in the store; the CRL was not published",
			 dec ? dec : "?", ca->name);
		goto out;
	}
	if ((*der = dup_der(out, (size_t)k)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	*len = (size_t)k;
	ca_log(ca, FG_LEVEL_INFO, NULL, "made CRL number %s: %zu revoked, next update in %lld s", dec, n,
	       ca->crl_validity);
	rc = 0;
out:
	OPENSSL_free(dec);
	OPENSSL_free(out);
	ASN1_INTEGER_free(numi);
	AUTHORITY_KEYID_free(akid);
	ASN1_TIME_free(nu);
	ASN1_TIME_free(tu);
	BN_free(num);
	X509_CRL_free(crl);
	return rc;
}

/* An unsigned OCSPResponse of an error status (RFC 6960 4.2.1) into
 * *resp. FG_OCSP_ANSWERED or -1. */
static int ocsp_plain(int status, unsigned char **resp, size_t *resp_len, char *err, size_t errlen)
{
	OCSP_RESPONSE *r = OCSP_response_create(status, NULL);
	unsigned char *out = NULL;
	int k = r ? i2d_OCSP_RESPONSE(r, &out) : -1, rc = -1;

	if (k > 0 && (*resp = dup_der(out, (size_t)k)) != NULL) {
		*resp_len = (size_t)k;
		rc = FG_OCSP_ANSWERED;
	} else {
		fgp_ssl_err(err, errlen, "cannot encode an OCSP error response");
	}
	OPENSSL_free(out);
	OCSP_RESPONSE_free(r);
	return rc;
}

#define OCSP_MAX_CERTS 32         /* CertIDs per request we answer */

/* Is issuerKeyHash (made with the digest mdo) the hash of this CA's
 * public key? */
static int key_hash_is_ours(const struct local_ca *ca, const ASN1_OBJECT *mdo,
			    const ASN1_OCTET_STRING *khash)
{
	const EVP_MD *md = mdo ? EVP_get_digestbyobj(mdo) : NULL;
	const ASN1_BIT_STRING *key = X509_get0_pubkey_bitstr(ca->cert);
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned int hl = 0;

	if (md == NULL || khash == NULL || key == NULL ||
	    EVP_Digest(ASN1_STRING_get0_data(key), (size_t)ASN1_STRING_length(key), h, &hl, md, NULL) != 1)
		return 0;
	return (int)hl == ASN1_STRING_length(khash) && memcmp(h, ASN1_STRING_get0_data(khash), hl) == 0;
}

/* Signer mode: encode *bs (signed with the scratch key) and replace it
 * by the signer's answer, which must be signed by the CA key. 0 or -1. */
static int remote_sign_ocsp(const struct local_ca *ca, OCSP_BASICRESP **bs, char *err, size_t errlen)
{
	unsigned char *in = NULL, *got = NULL;
	size_t gotlen = 0;
	OCSP_BASICRESP *back = NULL;
	char why[512];
	int n, r, rc = -1;

	if (OCSP_basic_sign(*bs, ca->scratch_cert, ca->scratch, EVP_sha256(), NULL, OCSP_NOCERTS) != 1 ||
	    (n = i2d_OCSP_BASICRESP(*bs, &in)) <= 0) {
		fgp_ssl_err(err, errlen, "cannot encode the OCSP response of backend %s", ca->name);
		return -1;
	}
	r = remote_sign(ca, FG_SIGN_OCSP, NULL, NULL, in, (size_t)n, &got, &gotlen, why, sizeof why);
	if (r != 0) {
		snprintf(err, errlen, "the signer process %s the OCSP response of backend %s: %s",
			 r > 0 ? "refused" : "could not sign", ca->name, why);
		goto out;
	}
	const unsigned char *p = got;
	STACK_OF(X509) *ours = sk_X509_new_null();
	back = gotlen <= LONG_MAX ? d2i_OCSP_BASICRESP(NULL, &p, (long)gotlen) : NULL;
	/* Only the CA certificate may have signed it (OCSP_NOINTERN: not
	 * one the answer carries). */
	int good = back != NULL && p == got + gotlen && ours != NULL && sk_X509_push(ours, ca->cert) > 0 &&
		   OCSP_basic_verify(back, ours, NULL, OCSP_NOINTERN | OCSP_NOVERIFY | OCSP_NOCHECKS) == 1;
	sk_X509_free(ours);
	if (!good) {
		fgp_ssl_err(err, errlen, "the signer process answered an OCSP response that does not verify under backend %s's CA",
			    ca->name);
		goto out;
	}
	OCSP_BASICRESP_free(*bs);
	*bs = back;
	back = NULL;
	rc = 0;
out:
	OCSP_BASICRESP_free(back);
	OPENSSL_free(in);
	free(got);
	return rc;
}

/* See ocsp_respond in plugin.h. A CertID is this CA's when its
 * issuerKeyHash (in the request's own hash algorithm) is the hash of the
 * CA key: the key, not the name, is what signs, and `openssl ocsp -cert`
 * hashes the certificate's own issuer name, so a certificate that merely
 * claims another issuer name is still answered (it is "unknown" to the
 * store). CertIDs of other keys in a request that names this CA are
 * answered "unknown". The response is signed by the CA key itself (RFC 6960 4.2.2.2
 * allows the issuing CA), names the responder by the CA's subject and
 * carries the CA certificate. */
static int ca_ocsp_respond(void *state, const unsigned char *req, size_t req_len,
			   fg_cert_status_fn status, void *status_arg, int64_t now,
			   unsigned char **resp, size_t *resp_len, char *err, size_t errlen)
{
	struct local_ca *ca = state;
	const unsigned char *p = req;
	OCSP_REQUEST *rq = NULL;
	OCSP_BASICRESP *bs = NULL;
	OCSP_RESPONSE *r = NULL;
	ASN1_GENERALIZEDTIME *tu = NULL, *nu = NULL;
	unsigned char *out = NULL;
	int n, k, mine = 0, rc = -1;

	*resp = NULL;
	*resp_len = 0;
	if (req != NULL && req_len > 0 && req_len <= LONG_MAX)
		rq = d2i_OCSP_REQUEST(NULL, &p, (long)req_len);
	if (rq == NULL || p != req + req_len || (n = OCSP_request_onereq_count(rq)) <= 0 ||
	    n > OCSP_MAX_CERTS) {
		ERR_clear_error();
		rc = ocsp_plain(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, resp, resp_len, err, errlen);
		goto out;
	}
	if ((bs = OCSP_BASICRESP_new()) == NULL || (tu = ASN1_GENERALIZEDTIME_set(NULL, (time_t)now)) == NULL ||
	    (nu = ASN1_GENERALIZEDTIME_set(NULL, (time_t)(now + ca->ocsp_validity))) == NULL) {
		fgp_ssl_err(err, errlen, "cannot start an OCSP response");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		OCSP_CERTID *cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(rq, i));
		ASN1_OBJECT *mdo = NULL;
		ASN1_INTEGER *sn = NULL;
		ASN1_GENERALIZEDTIME *rt = NULL;
		ASN1_OCTET_STRING *khash = NULL;
		int cst = V_OCSP_CERTSTATUS_UNKNOWN, reason = -1;
		char hex[48];

		if (cid == NULL || OCSP_id_get0_info(NULL, &mdo, &khash, &sn, cid) != 1) {
			ERR_clear_error();
			rc = ocsp_plain(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, resp, resp_len, err, errlen);
			goto out;
		}
		if (key_hash_is_ours(ca, mdo, khash) && serial_hex(sn, hex, sizeof hex) == 0) {
			struct fg_cert_status cs = { FG_CERT_UNKNOWN, 0 };
			mine++;
			if (status(status_arg, hex, &cs) != 0) {
				ca_log(ca, FG_LEVEL_ERROR, NULL, "OCSP: the store cannot say the status of serial %s; answered internalError",
				       hex);
				rc = ocsp_plain(OCSP_RESPONSE_STATUS_INTERNALERROR, resp, resp_len, err, errlen);
				goto out;
			}
			if (cs.state == FG_CERT_GOOD) {
				cst = V_OCSP_CERTSTATUS_GOOD;
			} else if (cs.state == FG_CERT_REVOKED) {
				cst = V_OCSP_CERTSTATUS_REVOKED;
				reason = revoke_reason(ca, hex);
				rt = ASN1_GENERALIZEDTIME_set(NULL, (time_t)cs.revoked_at);
			}
		}
		ERR_clear_error();     /* a digest we do not know is not ours, not an error */
		if ((cst == V_OCSP_CERTSTATUS_REVOKED && rt == NULL) ||
		    OCSP_basic_add1_status(bs, cid, cst, reason, rt, tu, nu) == NULL) {
			ASN1_GENERALIZEDTIME_free(rt);
			fgp_ssl_err(err, errlen, "cannot add a certificate status to the OCSP response");
			goto out;
		}
		ASN1_GENERALIZEDTIME_free(rt);
	}
	if (!mine) {
		rc = FG_OCSP_NOT_MINE;
		goto out;
	}
	if (OCSP_copy_nonce(bs, rq) <= 0) {
		fgp_ssl_err(err, errlen, "cannot copy the OCSP nonce");
		goto out;
	}
	if (ca->remote) {
		if (remote_sign_ocsp(ca, &bs, err, errlen) != 0)
			goto out;
	} else if (OCSP_basic_sign(bs, ca->cert, ca->key, ca->md, NULL, 0) != 1) {
		fgp_ssl_err(err, errlen, "cannot sign the OCSP response of backend %s", ca->name);
		goto out;
	}
	if ((r = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs)) == NULL ||
	    (k = i2d_OCSP_RESPONSE(r, &out)) <= 0) {
		fgp_ssl_err(err, errlen, "cannot sign the OCSP response of backend %s", ca->name);
		goto out;
	}
	if ((*resp = dup_der(out, (size_t)k)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	*resp_len = (size_t)k;
	rc = FG_OCSP_ANSWERED;
out:
	OPENSSL_free(out);
	OCSP_RESPONSE_free(r);
	ASN1_GENERALIZEDTIME_free(nu);
	ASN1_GENERALIZEDTIME_free(tu);
	OCSP_BASICRESP_free(bs);
	OCSP_REQUEST_free(rq);
	return rc;
}

static const struct fg_backend_ops local_ops = {
	.abi_version = FG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct fg_backend_ops),
	.name = "local",
	.description = "built-in OpenSSL CA",
	.open = ca_open,
	.issue = ca_issue,
	.poll = NULL,           /* never pends */
	.revoke = ca_revoke,
	.cacerts = ca_cacerts,
	.close = ca_close,
	.make_crl = ca_make_crl,
	.ocsp_respond = ca_ocsp_respond,
};

__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void);
__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void)
{
	return &local_ops;
}
