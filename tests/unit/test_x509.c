/*
 * Unit tests for lib/x509.c: key types, CSR checks (signature, key
 * strength, trailing data), chain verification, proof of possession.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <openssl/x509v3.h>

#include "fg_x509.h"

static unsigned char *csr_of(EVP_PKEY *k, size_t *len)
{
	unsigned char *der = NULL;
	char err[256];
	const char *dns[] = { "host1.example.com", "alt.example.com" };
	assert_int_equal(fg_csr_build(k, "host1", dns, 2, &der, len, err, sizeof err), 0);
	return der;
}

static void test_key_types_and_csr(void **state)
{
	char err[256];
	(void)state;
	for (int t = 0; t < FG_KEY_TYPE_MAX; t++) {
		if (t == FG_KEY_RSA4096)
			continue;   /* slow; same code path as 3072 */
		EVP_PKEY *k = fg_key_generate((enum fg_key_type)t, err, sizeof err);
		assert_non_null(k);
		assert_int_equal(fg_key_type_parse(fg_key_type_name((enum fg_key_type)t)), t);
		size_t len;
		unsigned char *der = csr_of(k, &len);
		struct fg_csr_info ci;
		assert_int_equal(fg_csr_check(der, len, &ci, NULL, err, sizeof err), 0);
		assert_string_equal(ci.cn, "host1");
		assert_int_equal(ci.ndns, 2);
		assert_string_equal(ci.dns[1], "alt.example.com");
		assert_int_equal(strlen(ci.spki_sha256), 64);
		if (t == FG_KEY_P256) {
			assert_string_equal(ci.key_type, "ec");
			assert_string_equal(ci.curve, "P-256");
		}
		if (t == FG_KEY_ED25519)
			assert_string_equal(ci.key_type, "ed25519");
		fg_csr_info_clear(&ci);
		free(der);
		EVP_PKEY_free(k);
	}
	assert_int_equal(fg_key_type_parse("dsa"), -1);
}

static void test_csr_refusals(void **state)
{
	char err[256];
	struct fg_csr_info ci;
	size_t len;
	(void)state;
	EVP_PKEY *k = fg_key_generate(FG_KEY_P256, err, sizeof err);
	unsigned char *der = csr_of(k, &len);

	der[len - 3] ^= 0x5a;             /* inside the signature */
	assert_int_equal(fg_csr_check(der, len, &ci, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "signature"));
	der[len - 3] ^= 0x5a;
	assert_int_equal(fg_csr_check(der, len, &ci, NULL, err, sizeof err), 0);
	fg_csr_info_clear(&ci);

	unsigned char *longer = malloc(len + 4);
	memcpy(longer, der, len);
	memset(longer + len, 0, 4);
	assert_int_equal(fg_csr_check(longer, len + 4, &ci, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "trailing"));
	free(longer);
	assert_int_equal(fg_csr_check(der, 10, &ci, NULL, err, sizeof err), -1);
	free(der);
	EVP_PKEY_free(k);

	EVP_PKEY *weak = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	der = csr_of(weak, &len);
	assert_int_equal(fg_csr_check(der, len, &ci, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "1024"));
	free(der);
	EVP_PKEY_free(weak);

	EVP_PKEY *k256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
	der = csr_of(k256, &len);
	assert_int_equal(fg_csr_check(der, len, &ci, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "curve"));
	free(der);
	EVP_PKEY_free(k256);
}

/* A CA and a leaf signed by it, for chain checks. */
static X509 *make_cert(EVP_PKEY *subject_key, EVP_PKEY *issuer_key, X509 *issuer, const char *cn, int ca)
{
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), ca ? 1 : 2);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, subject_key);
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	X509_sign(x, issuer_key, EVP_sha256());
	return x;
}

/* CSRs built from a template carry exactly its names and challenge, and
 * fg_csr_matches tells any difference. */
static void test_csr_template(void **state)
{
	char err[256], why[256];
	(void)state;
	EVP_PKEY *k = fg_key_generate(FG_KEY_P256, err, sizeof err);
	assert_non_null(k);
	const char *dns[] = { "a.example.com", "b.example.com" };
	const char *ip[] = { "192.0.2.7", "2001:db8::1" };
	const char *email[] = { "ops@example.com" };
	struct fg_csr_names nm = { "a.example.com", dns, 2, ip, 2, email, 1, "s3cret" };
	unsigned char *der = NULL;
	size_t len = 0;
	assert_int_equal(fg_csr_build_names(k, &nm, &der, &len, err, sizeof err), 0);
	struct fg_csr_info ci;
	assert_int_equal(fg_csr_check(der, len, &ci, NULL, err, sizeof err), 0);
	fg_csr_info_clear(&ci);

	assert_int_equal(fg_csr_matches(der, len, &nm, why, sizeof why), 1);
	/* order and case of names do not matter; the IPv6 spelling does not either */
	const char *dns2[] = { "B.example.com", "a.example.com" };
	const char *ip2[] = { "2001:0db8:0::1", "192.0.2.7" };
	struct fg_csr_names same = { "A.example.com", dns2, 2, ip2, 2, email, 1, "s3cret" };
	assert_int_equal(fg_csr_matches(der, len, &same, why, sizeof why), 1);

	struct fg_csr_names w = nm;
	w.challenge = "other";
	assert_int_equal(fg_csr_matches(der, len, &w, why, sizeof why), 0);
	assert_non_null(strstr(why, "challengePassword"));
	w = nm;
	w.cn = "c.example.com";
	assert_int_equal(fg_csr_matches(der, len, &w, why, sizeof why), 0);
	assert_non_null(strstr(why, "CN"));
	w = nm;
	w.ndns = 1;
	assert_int_equal(fg_csr_matches(der, len, &w, why, sizeof why), 0);
	assert_non_null(strstr(why, "DNS"));
	w = nm;
	w.nip = 1;
	assert_int_equal(fg_csr_matches(der, len, &w, why, sizeof why), 0);
	assert_non_null(strstr(why, "IP"));
	w = nm;
	w.nemail = 0;
	assert_int_equal(fg_csr_matches(der, len, &w, why, sizeof why), 0);
	free(der);

	/* no challenge in the CSR, one wanted: told so */
	nm.challenge = NULL;
	assert_int_equal(fg_csr_build_names(k, &nm, &der, &len, err, sizeof err), 0);
	w = nm;
	w.challenge = "s3cret";
	assert_int_equal(fg_csr_matches(der, len, &w, why, sizeof why), 0);
	assert_non_null(strstr(why, "no challengePassword"));
	assert_int_equal(fg_csr_matches(der, len, &nm, why, sizeof why), 1);
	free(der);

	/* a bad IP in the template is an error, not a CSR */
	const char *badip[] = { "300.1.1.1" };
	struct fg_csr_names bad = { "x", NULL, 0, badip, 1, NULL, 0, NULL };
	assert_int_equal(fg_csr_build_names(k, &bad, &der, &len, err, sizeof err), -1);
	assert_non_null(strstr(err, "300.1.1.1"));
	assert_int_equal(fg_csr_matches((const unsigned char *)"junk", 4, &nm, why, sizeof why), 0);
	EVP_PKEY_free(k);
}

static void test_chain_and_pop(void **state)
{
	char err[256];
	(void)state;
	EVP_PKEY *cak = fg_key_generate(FG_KEY_P256, err, sizeof err);
	EVP_PKEY *otherk = fg_key_generate(FG_KEY_P256, err, sizeof err);
	EVP_PKEY *leafk = fg_key_generate(FG_KEY_P256, err, sizeof err);
	X509 *ca = make_cert(cak, cak, NULL, "ca", 1);
	X509 *other = make_cert(otherk, otherk, NULL, "other ca", 1);
	X509 *leaf = make_cert(leafk, cak, ca, "leaf", 0);
	STACK_OF(X509) *anchors = sk_X509_new_null(), *wrong = sk_X509_new_null();
	sk_X509_push(anchors, ca);
	sk_X509_push(wrong, other);
	assert_int_equal(fg_cert_verify(leaf, NULL, anchors, err, sizeof err), 0);
	assert_int_equal(fg_cert_verify(leaf, NULL, wrong, err, sizeof err), -1);
	assert_non_null(strstr(err, "trust anchors"));
	assert_true(fg_cert_matches_key(leaf, leafk));
	assert_false(fg_cert_matches_key(leaf, otherk));

	struct fg_cert_info ci;
	assert_int_equal(fg_cert_info(leaf, &ci, err, sizeof err), 0);
	assert_string_equal(ci.serial_hex, "02");
	assert_string_equal(ci.subject, "CN=leaf");
	assert_string_equal(ci.issuer, "CN=ca");
	assert_true(ci.not_after - ci.not_before == 3660);

	unsigned char csr[] = "pretend CSR bytes", *sig = NULL;
	size_t siglen;
	assert_int_equal(fg_pop_sign(leafk, "rid-12345678", csr, sizeof csr, &sig, &siglen, err, sizeof err), 0);
	assert_int_equal(fg_pop_verify(leaf, "rid-12345678", csr, sizeof csr, sig, siglen, err, sizeof err), 0);
	assert_int_equal(fg_pop_verify(leaf, "rid-87654321", csr, sizeof csr, sig, siglen, err, sizeof err), -1);
	csr[0] ^= 1;
	assert_int_equal(fg_pop_verify(leaf, "rid-12345678", csr, sizeof csr, sig, siglen, err, sizeof err), -1);
	free(sig);
	assert_int_equal(fg_pop_sign(otherk, "rid-12345678", csr, sizeof csr, &sig, &siglen, err, sizeof err), 0);
	assert_int_equal(fg_pop_verify(leaf, "rid-12345678", csr, sizeof csr, sig, siglen, err, sizeof err), -1);
	free(sig);

	/* Ed25519 proofs too */
	EVP_PKEY *edk = fg_key_generate(FG_KEY_ED25519, err, sizeof err);
	X509 *edleaf = make_cert(edk, cak, ca, "ed", 0);
	assert_int_equal(fg_pop_sign(edk, "rid-12345678", csr, sizeof csr, &sig, &siglen, err, sizeof err), 0);
	assert_int_equal(fg_pop_verify(edleaf, "rid-12345678", csr, sizeof csr, sig, siglen, err, sizeof err), 0);
	free(sig);

	/* DER and PEM round trips */
	unsigned char *der;
	size_t dl;
	assert_int_equal(fg_cert_to_der(leaf, &der, &dl), 0);
	X509 *back = fg_cert_from_der(der, dl, err, sizeof err);
	assert_non_null(back);
	assert_int_equal(X509_cmp(back, leaf), 0);
	assert_null(fg_cert_from_der(der, dl - 1, err, sizeof err));
	free(der);
	char *pem = fg_cert_to_pem(leaf);
	STACK_OF(X509) *sk = fg_certs_from_pem(pem, strlen(pem), err, sizeof err);
	assert_int_equal(sk_X509_num(sk), 1);
	assert_null(fg_certs_from_pem("nothing here", 12, err, sizeof err));
	sk_X509_pop_free(sk, X509_free);
	free(pem);

	X509_free(back);
	X509_free(edleaf);
	EVP_PKEY_free(edk);
	sk_X509_free(anchors);
	sk_X509_free(wrong);
	X509_free(ca);
	X509_free(other);
	X509_free(leaf);
	EVP_PKEY_free(cak);
	EVP_PKEY_free(otherk);
	EVP_PKEY_free(leafk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_types_and_csr),
		cmocka_unit_test(test_csr_refusals),
		cmocka_unit_test(test_csr_template),
		cmocka_unit_test(test_chain_and_pop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
