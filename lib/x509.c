/*
 * x509.c: keys, CSRs, certificates and the renewal proof of possession on
 * OpenSSL 3 (see fg_x509.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fg_util.h"
#include "fg_x509.h"

static const char *const key_type_names[FG_KEY_TYPE_MAX] = {
	"p256", "p384", "rsa2048", "rsa3072", "rsa4096", "ed25519",
};

int fg_key_type_parse(const char *s)
{
	for (int i = 0; s && i < FG_KEY_TYPE_MAX; i++)
		if (strcmp(s, key_type_names[i]) == 0)
			return i;
	return -1;
}

const char *fg_key_type_name(enum fg_key_type t)
{
	return t < FG_KEY_TYPE_MAX ? key_type_names[t] : "unknown";
}

EVP_PKEY *fg_key_generate(enum fg_key_type type, char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;
	ERR_clear_error();
	switch (type) {
	case FG_KEY_P256: k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"); break;
	case FG_KEY_P384: k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384"); break;
	case FG_KEY_RSA2048: k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048); break;
	case FG_KEY_RSA3072: k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072); break;
	case FG_KEY_RSA4096: k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096); break;
	case FG_KEY_ED25519: k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"); break;
	default:
		fg_seterr(err, errlen, "unknown key type %d", (int)type);
		return NULL;
	}
	if (k == NULL)
		fg_ssl_err(err, errlen, "key generation failed");
	return k;
}

char *fg_key_to_pem(EVP_PKEY *key, size_t *len, char *err, size_t errlen)
{
	BIO *b = BIO_new(BIO_s_secmem());
	char *out = NULL, *data;
	long n;
	if (b == NULL || PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) != 1) {
		fg_ssl_err(err, errlen, "cannot encode the private key");
		goto out;
	}
	n = BIO_get_mem_data(b, &data);
	out = malloc((size_t)n + 1);
	if (out == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	if (len)
		*len = (size_t)n;
out:
	BIO_free(b);   /* secure memory BIO: wiped on free */
	return out;
}

int fg_key_save(const char *path, EVP_PKEY *key, mode_t mode, uid_t uid, gid_t gid,
		char *err, size_t errlen)
{
	size_t len = 0;
	char *pem = fg_key_to_pem(key, &len, err, errlen);
	if (pem == NULL)
		return -1;
	int rc = fg_write_file_atomic(path, pem, len, mode, uid, gid, err, errlen);
	OPENSSL_cleanse(pem, len);
	free(pem);
	return rc;
}

EVP_PKEY *fg_key_load(const char *path, char *err, size_t errlen)
{
	char *pem = NULL;
	size_t len = 0;
	EVP_PKEY *k = NULL;
	if (fg_read_file(path, 64 * 1024, &pem, &len, err, errlen) != 0)
		return NULL;
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	ERR_clear_error();
	if (b != NULL)
		k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	if (k == NULL)
		fg_ssl_err(err, errlen, "cannot read a private key from the file");
	BIO_free(b);
	OPENSSL_cleanse(pem, len);
	free(pem);
	if (k == NULL && err && errlen) {
		char tmp[512];
		snprintf(tmp, sizeof tmp, "%s: %s", path, err);
		fg_strlcpy(err, tmp, errlen);
	}
	return k;
}

static const EVP_MD *sign_md(EVP_PKEY *key)
{
	if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448"))
		return NULL;
	if (EVP_PKEY_is_a(key, "EC") && EVP_PKEY_get_bits(key) > 256)
		return EVP_sha384();
	return EVP_sha256();
}

static int push_name(GENERAL_NAMES *gens, int type, const char *v)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_STRING *s = NULL;
	unsigned char ip[16];
	int l = 0;

	if (g == NULL)
		return -1;
	if (type == GEN_IPADD) {
		l = inet_pton(AF_INET, v, ip) == 1 ? 4 : inet_pton(AF_INET6, v, ip) == 1 ? 16 : 0;
		s = l ? ASN1_OCTET_STRING_new() : NULL;
		if (s == NULL || ASN1_OCTET_STRING_set(s, ip, l) != 1)
			goto fail;
	} else {
		s = ASN1_IA5STRING_new();
		if (s == NULL || ASN1_STRING_set(s, v, -1) != 1)
			goto fail;
	}
	GENERAL_NAME_set0_value(g, type, s);
	if (sk_GENERAL_NAME_push(gens, g) <= 0) {
		GENERAL_NAME_free(g);
		return -1;
	}
	return 0;
fail:
	ASN1_STRING_free(s);
	GENERAL_NAME_free(g);
	return -1;
}

int fg_csr_build_names(EVP_PKEY *key, const struct fg_csr_names *nm, unsigned char **der,
		       size_t *derlen, char *err, size_t errlen)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gens = NULL;
	unsigned char *buf = NULL;
	int rc = -1, n;

	ERR_clear_error();
	if (req == NULL || X509_REQ_set_version(req, 0) != 1 || X509_REQ_set_pubkey(req, key) != 1)
		goto ssl;
	name = X509_NAME_new();
	if (name == NULL)
		goto ssl;
	if (nm->cn && *nm->cn &&
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)nm->cn, -1, -1, 0) != 1)
		goto ssl;
	if (X509_REQ_set_subject_name(req, name) != 1)
		goto ssl;
	if (nm->ndns + nm->nip + nm->nemail > 0) {
		gens = GENERAL_NAMES_new();
		if (gens == NULL)
			goto ssl;
		for (size_t i = 0; i < nm->ndns; i++)
			if (push_name(gens, GEN_DNS, nm->dns[i]) != 0)
				goto ssl;
		for (size_t i = 0; i < nm->nip; i++)
			if (push_name(gens, GEN_IPADD, nm->ip[i]) != 0) {
				fg_seterr(err, errlen, "'%s' is not an IP address", nm->ip[i]);
				goto out;
			}
		for (size_t i = 0; i < nm->nemail; i++)
			if (push_name(gens, GEN_EMAIL, nm->email[i]) != 0)
				goto ssl;
		exts = sk_X509_EXTENSION_new_null();
		X509_EXTENSION *ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
		if (exts == NULL || ext == NULL) {
			X509_EXTENSION_free(ext);
			goto ssl;
		}
		sk_X509_EXTENSION_push(exts, ext);
		if (X509_REQ_add_extensions(req, exts) != 1)
			goto ssl;
	}
	if (nm->challenge && *nm->challenge &&
	    X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword, MBSTRING_UTF8,
				      (const unsigned char *)nm->challenge, -1) != 1)
		goto ssl;
	if (X509_REQ_sign(req, key, sign_md(key)) <= 0)
		goto ssl;
	n = i2d_X509_REQ(req, &buf);
	if (n <= 0)
		goto ssl;
	*der = malloc((size_t)n);
	if (*der == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	memcpy(*der, buf, (size_t)n);
	*derlen = (size_t)n;
	rc = 0;
	goto out;
ssl:
	fg_ssl_err(err, errlen, "cannot build the CSR");
out:
	OPENSSL_free(buf);
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(name);
	X509_REQ_free(req);
	return rc;
}

int fg_csr_build(EVP_PKEY *key, const char *cn, const char *const *dns, size_t ndns,
		 unsigned char **der, size_t *derlen, char *err, size_t errlen)
{
	struct fg_csr_names nm = { .cn = cn, .dns = dns, .ndns = ndns };
	return fg_csr_build_names(key, &nm, der, derlen, err, errlen);
}

/* Is every entry of want in have, and the other way round (case-insensitive)? */
static int same_set(const char *const *a, size_t na, char **b, size_t nb)
{
	if (na != nb)
		return 0;
	for (size_t i = 0; i < na; i++) {
		size_t j = 0;
		while (j < nb && strcasecmp(a[i], b[j]) != 0)
			j++;
		if (j == nb)
			return 0;
	}
	return 1;
}

int fg_csr_matches(const unsigned char *der, size_t len, const struct fg_csr_names *want,
		   char *why, size_t whylen)
{
	const unsigned char *p = der;
	X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
	char *dns[64], *ip[64], *email[64], cn[256] = "", chal[256] = "";
	size_t ndns = 0, nip = 0, nemail = 0;
	int rc = 0;

	if (req == NULL) {
		ERR_clear_error();
		fg_seterr(why, whylen, "the CSR cannot be parsed");
		return 0;
	}
	X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn, sizeof cn);
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	GENERAL_NAMES *gens = exts ? X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL) : NULL;
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char buf[INET6_ADDRSTRLEN + 1];
		if ((g->type == GEN_DNS || g->type == GEN_EMAIL) && (g->type == GEN_DNS ? ndns : nemail) < 64) {
			char *v = strndup((const char *)ASN1_STRING_get0_data(g->d.ia5), (size_t)ASN1_STRING_length(g->d.ia5));
			if (g->type == GEN_DNS)
				dns[ndns++] = v;
			else
				email[nemail++] = v;
		} else if (g->type == GEN_IPADD && nip < 64) {
			int l = ASN1_STRING_length(g->d.ip);
			if ((l == 4 || l == 16) && inet_ntop(l == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.ip), buf, sizeof buf))
				ip[nip++] = strdup(buf);
		} else {
			fg_seterr(why, whylen, "the CSR carries a subjectAltName of an unexpected type");
			goto out;
		}
	}
	int ai = X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword, -1);
	if (ai >= 0) {
		ASN1_TYPE *t = X509_ATTRIBUTE_get0_type(X509_REQ_get_attr(req, ai), 0);
		if (t && (t->type == V_ASN1_PRINTABLESTRING || t->type == V_ASN1_UTF8STRING || t->type == V_ASN1_IA5STRING)) {
			int l = ASN1_STRING_length(t->value.asn1_string);
			if (l >= 0 && (size_t)l < sizeof chal)
				memcpy(chal, ASN1_STRING_get0_data(t->value.asn1_string), (size_t)l);
		}
	}
	/* an IP text may have several spellings: compare the canonical form */
	char *wip[64];
	size_t nwip = 0;
	for (size_t i = 0; i < want->nip && i < 64; i++) {
		unsigned char b[16];
		char buf[INET6_ADDRSTRLEN + 1];
		int v6 = strchr(want->ip[i], ':') != NULL;
		if (inet_pton(v6 ? AF_INET6 : AF_INET, want->ip[i], b) == 1 &&
		    inet_ntop(v6 ? AF_INET6 : AF_INET, b, buf, sizeof buf))
			wip[nwip++] = strdup(buf);
	}
	if (strcasecmp(cn, want->cn ? want->cn : "") != 0)
		fg_seterr(why, whylen, "its subject CN is '%s', not '%s'", cn, want->cn ? want->cn : "");
	else if (!same_set(want->dns, want->ndns, dns, ndns))
		fg_seterr(why, whylen, "its DNS names differ from those decided");
	else if (!same_set((const char *const *)wip, nwip, ip, nip))
		fg_seterr(why, whylen, "its IP addresses differ from those decided");
	else if (!same_set(want->email, want->nemail, email, nemail))
		fg_seterr(why, whylen, "its e-mail names differ from those decided");
	else if (strcmp(chal, want->challenge ? want->challenge : "") != 0)
		fg_seterr(why, whylen, ai >= 0 ? "its challengePassword is not the one required" : "it carries no challengePassword");
	else
		rc = 1;
	for (size_t i = 0; i < nwip; i++)
		free(wip[i]);
out:
	for (size_t i = 0; i < ndns; i++)
		free(dns[i]);
	for (size_t i = 0; i < nip; i++)
		free(ip[i]);
	for (size_t i = 0; i < nemail; i++)
		free(email[i]);
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	return rc;
}

void fg_csr_info_clear(struct fg_csr_info *info)
{
	if (info == NULL)
		return;
	for (size_t i = 0; i < info->ndns && i < FG_CSR_MAX_DNS; i++)
		free(info->dns[i]);
	memset(info, 0, sizeof *info);
}

/* Key strength rules for certified keys; fills type/curve/bits. */
static int check_key(EVP_PKEY *pk, struct fg_csr_info *info, char *err, size_t errlen)
{
	int bits = EVP_PKEY_get_bits(pk);
	info->key_bits = bits;
	if (EVP_PKEY_is_a(pk, "RSA")) {
		fg_strlcpy(info->key_type, "rsa", sizeof info->key_type);
		if (bits < 2048 || bits > 8192) {
			fg_seterr(err, errlen, "RSA key of %d bits is not accepted; use 2048 to 8192 bits (or P-256)",
				  bits);
			return -1;
		}
		return 0;
	}
	if (EVP_PKEY_is_a(pk, "EC")) {
		char group[64] = "";
		size_t gl = 0;
		fg_strlcpy(info->key_type, "ec", sizeof info->key_type);
		EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &gl);
		if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
			fg_strlcpy(info->curve, "P-256", sizeof info->curve);
			return 0;
		}
		if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
			fg_strlcpy(info->curve, "P-384", sizeof info->curve);
			return 0;
		}
		fg_seterr(err, errlen, "EC curve %s is not supported; use P-256 or P-384",
			  group[0] ? group : "(explicit parameters)");
		return -1;
	}
	if (EVP_PKEY_is_a(pk, "ED25519")) {
		fg_strlcpy(info->key_type, "ed25519", sizeof info->key_type);
		return 0;
	}
	fg_seterr(err, errlen, "key type %s is not supported; use P-256, P-384, RSA or Ed25519",
		  EVP_PKEY_get0_type_name(pk) ? EVP_PKEY_get0_type_name(pk) : "unknown");
	return -1;
}

int fg_csr_check(const unsigned char *der, size_t len, struct fg_csr_info *info,
		 EVP_PKEY **pubkey, char *err, size_t errlen)
{
	const unsigned char *p = der;
	X509_REQ *req = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	unsigned char *spki = NULL;
	int rc = -1;

	memset(info, 0, sizeof *info);
	ERR_clear_error();
	if (der == NULL || len == 0) {
		fg_seterr(err, errlen, "no CSR was sent");
		return -1;
	}
	if (len > 64 * 1024) {
		fg_seterr(err, errlen, "CSR of %zu bytes is too large", len);
		return -1;
	}
	req = d2i_X509_REQ(NULL, &p, (long)len);
	if (req == NULL) {
		fg_ssl_err(err, errlen, "CSR is not DER-encoded PKCS#10");
		goto out;
	}
	if ((size_t)(p - der) != len) {
		fg_seterr(err, errlen, "CSR has %zu bytes of trailing data", len - (size_t)(p - der));
		goto out;
	}
	EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
	if (pk == NULL) {
		fg_ssl_err(err, errlen, "CSR public key is unreadable");
		goto out;
	}
	if (check_key(pk, info, err, errlen) != 0)
		goto out;
	if (X509_REQ_verify(req, pk) != 1) {
		fg_ssl_err(err, errlen, "CSR signature does not verify");
		goto out;
	}
	X509_NAME *subj = X509_REQ_get_subject_name(req);
	int idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
	if (idx >= 0) {
		ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
		unsigned char *utf8 = NULL;
		int ul = ASN1_STRING_to_UTF8(&utf8, d);
		if (ul < 0 || (size_t)ul >= sizeof info->cn || memchr(utf8, 0, (size_t)ul) != NULL) {
			OPENSSL_free(utf8);
			fg_seterr(err, errlen, "CSR subject CN is malformed or longer than %zu bytes",
				  sizeof info->cn - 1);
			goto out;
		}
		memcpy(info->cn, utf8, (size_t)ul);
		info->cn[ul] = '\0';
		OPENSSL_free(utf8);
	}
	exts = X509_REQ_get_extensions(req);
	GENERAL_NAMES *gens = exts ? X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL) : NULL;
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type != GEN_DNS || info->ndns >= FG_CSR_MAX_DNS)
			continue;
		const ASN1_IA5STRING *s = g->d.dNSName;
		info->dns[info->ndns] = strndup((const char *)ASN1_STRING_get0_data(s),
						(size_t)ASN1_STRING_length(s));
		if (info->dns[info->ndns] != NULL)
			info->ndns++;
	}
	GENERAL_NAMES_free(gens);
	int sl = i2d_PUBKEY(pk, &spki);
	if (sl <= 0) {
		fg_ssl_err(err, errlen, "cannot encode the CSR public key");
		goto out;
	}
	fg_sha256_hex(spki, (size_t)sl, info->spki_sha256);
	if (pubkey != NULL) {
		*pubkey = pk;
		EVP_PKEY_up_ref(pk);
	}
	rc = 0;
out:
	if (rc != 0)
		fg_csr_info_clear(info);
	OPENSSL_free(spki);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	ERR_clear_error();
	return rc;
}

X509 *fg_cert_from_der(const unsigned char *der, size_t len, char *err, size_t errlen)
{
	const unsigned char *p = der;
	ERR_clear_error();
	if (der == NULL || len == 0 || len > 1024 * 1024) {
		fg_seterr(err, errlen, "no certificate (or one of implausible size)");
		return NULL;
	}
	X509 *x = d2i_X509(NULL, &p, (long)len);
	if (x == NULL) {
		fg_ssl_err(err, errlen, "not a DER X.509 certificate");
		return NULL;
	}
	if ((size_t)(p - der) != len) {
		X509_free(x);
		fg_seterr(err, errlen, "certificate has trailing data");
		return NULL;
	}
	return x;
}

int fg_cert_to_der(X509 *cert, unsigned char **der, size_t *len)
{
	unsigned char *buf = NULL;
	int n = i2d_X509(cert, &buf);
	if (n <= 0)
		return -1;
	*der = malloc((size_t)n);
	if (*der == NULL) {
		OPENSSL_free(buf);
		return -1;
	}
	memcpy(*der, buf, (size_t)n);
	*len = (size_t)n;
	OPENSSL_free(buf);
	return 0;
}

char *fg_cert_to_pem(X509 *cert)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	if (b != NULL && PEM_write_bio_X509(b, cert) == 1) {
		long n = BIO_get_mem_data(b, &data);
		out = malloc((size_t)n + 1);
		if (out) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
		}
	}
	BIO_free(b);
	return out;
}

STACK_OF(X509) *fg_certs_from_pem(const char *pem, size_t len, char *err, size_t errlen)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	X509 *x;
	if (sk == NULL || b == NULL) {
		BIO_free(b);
		sk_X509_free(sk);
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		sk_X509_push(sk, x);
	ERR_clear_error();
	BIO_free(b);
	if (sk_X509_num(sk) == 0) {
		sk_X509_free(sk);
		fg_seterr(err, errlen, "no PEM certificate found");
		return NULL;
	}
	return sk;
}

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
	struct tm tm;
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

int fg_cert_info(X509 *cert, struct fg_cert_info *info, char *err, size_t errlen)
{
	memset(info, 0, sizeof *info);
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	BN_free(bn);
	if (hex == NULL) {
		fg_ssl_err(err, errlen, "cannot read the certificate serial");
		return -1;
	}
	/* Even number of digits, as `openssl x509 -serial` prints it. */
	if (strlen(hex) % 2)
		snprintf(info->serial_hex, sizeof info->serial_hex, "0%s", hex);
	else
		fg_strlcpy(info->serial_hex, hex, sizeof info->serial_hex);
	OPENSSL_free(hex);
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	if (b) {
		X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
		long n = BIO_get_mem_data(b, &data);
		snprintf(info->subject, sizeof info->subject, "%.*s", (int)n, data);
		BIO_reset(b);
		X509_NAME_print_ex(b, X509_get_issuer_name(cert), 0, XN_FLAG_RFC2253);
		n = BIO_get_mem_data(b, &data);
		snprintf(info->issuer, sizeof info->issuer, "%.*s", (int)n, data);
		BIO_free(b);
	}
	info->not_before = asn1_time_unix(X509_get0_notBefore(cert));
	info->not_after = asn1_time_unix(X509_get0_notAfter(cert));
	return 0;
}

int fg_cert_verify(X509 *leaf, STACK_OF(X509) *chain, STACK_OF(X509) *anchors,
		   char *err, size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int rc = -1;
	if (store == NULL || ctx == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	for (int i = 0; anchors && i < sk_X509_num(anchors); i++)
		X509_STORE_add_cert(store, sk_X509_value(anchors, i));
	if (X509_STORE_CTX_init(ctx, store, leaf, chain) != 1) {
		fg_ssl_err(err, errlen, "cannot set up chain verification");
		goto out;
	}
	if (X509_verify_cert(ctx) == 1) {
		rc = 0;
	} else {
		int e = X509_STORE_CTX_get_error(ctx);
		fg_seterr(err, errlen, "certificate does not chain to the trust anchors: %s (depth %d)",
			  X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(ctx));
	}
out:
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}

int fg_cert_matches_key(X509 *cert, EVP_PKEY *key)
{
	EVP_PKEY *pk = X509_get0_pubkey(cert);
	int r = pk && key && EVP_PKEY_eq(pk, key) == 1;
	ERR_clear_error();
	return r;
}

/* The proof-of-possession message (see fg_x509.h). */
static int pop_message(const char *request_id, const unsigned char *csr, size_t csr_len,
		       unsigned char **msg, size_t *len)
{
	static const char ctx[] = "fleetgate-renew-v1";
	size_t rl = strlen(request_id), n = sizeof ctx + rl + 1 + 32;
	unsigned char *m = malloc(n);
	unsigned int dl = 0;
	if (m == NULL)
		return -1;
	memcpy(m, ctx, sizeof ctx);                 /* includes the NUL */
	memcpy(m + sizeof ctx, request_id, rl);
	m[sizeof ctx + rl] = '\0';
	if (EVP_Digest(csr, csr_len, m + sizeof ctx + rl + 1, &dl, EVP_sha256(), NULL) != 1) {
		free(m);
		return -1;
	}
	*msg = m;
	*len = n;
	return 0;
}

int fg_pop_sign(EVP_PKEY *key, const char *request_id, const unsigned char *csr_der,
		size_t csr_len, unsigned char **sig, size_t *siglen, char *err, size_t errlen)
{
	unsigned char *msg = NULL;
	size_t mlen = 0, sl = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int rc = -1;
	*sig = NULL;
	ERR_clear_error();
	if (md == NULL || pop_message(request_id, csr_der, csr_len, &msg, &mlen) != 0) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	if (EVP_DigestSignInit(md, NULL, sign_md(key) ? EVP_sha256() : NULL, NULL, key) != 1 ||
	    EVP_DigestSign(md, NULL, &sl, msg, mlen) != 1 || (*sig = malloc(sl)) == NULL ||
	    EVP_DigestSign(md, *sig, &sl, msg, mlen) != 1) {
		fg_ssl_err(err, errlen, "cannot sign the proof of possession");
		free(*sig);
		*sig = NULL;
		goto out;
	}
	*siglen = sl;
	rc = 0;
out:
	free(msg);
	EVP_MD_CTX_free(md);
	return rc;
}

int fg_pop_verify(X509 *cert, const char *request_id, const unsigned char *csr_der,
		  size_t csr_len, const unsigned char *sig, size_t siglen, char *err, size_t errlen)
{
	unsigned char *msg = NULL;
	size_t mlen = 0;
	EVP_PKEY *pk = X509_get0_pubkey(cert);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int rc = -1;
	ERR_clear_error();
	if (pk == NULL || md == NULL || sig == NULL || siglen == 0 ||
	    pop_message(request_id, csr_der, csr_len, &msg, &mlen) != 0) {
		fg_seterr(err, errlen, "no signature or no key to check it with");
		goto out;
	}
	if (EVP_DigestVerifyInit(md, NULL, sign_md(pk) ? EVP_sha256() : NULL, NULL, pk) != 1 ||
	    EVP_DigestVerify(md, sig, siglen, msg, mlen) != 1) {
		fg_seterr(err, errlen, "signature does not verify");
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	free(msg);
	EVP_MD_CTX_free(md);
	return rc;
}
