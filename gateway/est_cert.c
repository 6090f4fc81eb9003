/*
 * est_cert.c: the EST front-end's TLS server certificate (see est_cert.h).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "est_cert.h"
#include "fg_util.h"
#include "fg_x509.h"

#define EST_CERT_DAYS 365

static int add_ext(X509 *x, X509 *ca, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	int ok = ext != NULL && X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* "IP:1.2.3.4" or "DNS:name", and localhost for the wildcard addresses. */
static void san_of(const char *host, char *out, size_t outlen)
{
	unsigned char buf[16];
	if (strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
		snprintf(out, outlen, "DNS:localhost,IP:127.0.0.1,IP:::1");
	else if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1)
		snprintf(out, outlen, "IP:%s", host);
	else
		snprintf(out, outlen, "DNS:%s", host);
}

int est_cert_make(const char *host, const char *ca_key_path, const char *ca_crt_path,
		  const char *cert_path, const char *key_path, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL, *cakey = NULL;
	X509 *ca = NULL, *x = NULL;
	FILE *f = NULL;
	BIO *mem = NULL;
	unsigned char serial[16];
	char san[320], cn[300];
	BIGNUM *bn = NULL;
	char *pem = NULL;
	long n;
	int rc = -1;

	if ((cakey = fg_key_load(ca_key_path, err, errlen)) == NULL)
		goto out;
	if ((f = fopen(ca_crt_path, "r")) == NULL || (ca = PEM_read_X509(f, NULL, NULL, NULL)) == NULL) {
		fg_seterr(err, errlen, "cannot read the CA certificate %s; the EST certificate needs the local CA",
			  ca_crt_path);
		goto out;
	}
	if ((key = fg_key_generate(FG_KEY_P256, err, errlen)) == NULL)
		goto out;
	san_of(host, san, sizeof san);
	snprintf(cn, sizeof cn, "fleetgate EST %s", host);
	if ((x = X509_new()) == NULL || !X509_set_version(x, 2) ||
	    RAND_bytes(serial, sizeof serial) != 1)
		goto ssl;
	serial[0] &= 0x7f;
	if ((bn = BN_bin2bn(serial, sizeof serial, NULL)) == NULL ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -60) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)EST_CERT_DAYS * 86400) ||
	    !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca)) || !X509_set_pubkey(x, key) ||
	    add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
	    add_ext(x, ca, NID_key_usage, "critical,digitalSignature") != 0 ||
	    add_ext(x, ca, NID_ext_key_usage, "serverAuth") != 0 ||
	    add_ext(x, ca, NID_subject_key_identifier, "hash") != 0 ||
	    add_ext(x, ca, NID_authority_key_identifier, "keyid") != 0 ||
	    add_ext(x, ca, NID_subject_alt_name, san) != 0 ||
	    X509_sign(x, cakey, EVP_PKEY_is_a(cakey, "ED25519") ? NULL : EVP_sha256()) <= 0)
		goto ssl;
	if ((mem = BIO_new(BIO_s_mem())) == NULL || !PEM_write_bio_X509(mem, x) ||
	    !PEM_write_bio_X509(mem, ca))
		goto ssl;
	n = BIO_get_mem_data(mem, &pem);
	if (fg_key_save(key_path, key, 0600, (uid_t)-1, (gid_t)-1, err, errlen) != 0 ||
	    fg_write_file_atomic(cert_path, pem, (size_t)n, 0644, (uid_t)-1, (gid_t)-1, err, errlen) != 0)
		goto out;
	rc = 0;
	goto out;
ssl:
	fg_seterr(err, errlen, "cannot make the EST server certificate: %s",
		  ERR_reason_error_string(ERR_peek_last_error()) ? ERR_reason_error_string(ERR_peek_last_error())
								  : "out of memory");
out:
	ERR_clear_error();
	if (f)
		fclose(f);
	BIO_free(mem);
	BN_free(bn);
	X509_free(x);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(cakey);
	return rc;
}
