/*
 * Unit tests of the ACME plugin's pure parts: the ARI certID against RFC
 * 9773's example, RFC 3339 times and the suggestedWindow, base64url
 * decoding, the external account binding's HS256 JWS (RFC 8555 7.3.4), and
 * the check that keeps a plugin from writing past an older host's result.
 * The plugin's source is included so that its static helpers are reachable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../plugins/acme/acme.c"

/* A signed certificate with the given serial (big-endian bytes) and, when
 * aki is not NULL, that authorityKeyIdentifier keyIdentifier. */
static X509 *make_cert(const unsigned char *serial, size_t serial_len, const unsigned char *aki, size_t aki_len)
{
	X509 *x = X509_new();
	EVP_PKEY *k = EVP_EC_gen("P-256");
	BIGNUM *bn = BN_bin2bn(serial, (int)serial_len, NULL);
	assert_non_null(x);
	assert_non_null(k);
	assert_non_null(bn);
	assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)));
	BN_free(bn);
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"ari.test", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_set_pubkey(x, k);
	if (aki != NULL) {
		AUTHORITY_KEYID *ak = AUTHORITY_KEYID_new();
		ak->keyid = ASN1_OCTET_STRING_new();
		ASN1_OCTET_STRING_set(ak->keyid, aki, (int)aki_len);
		assert_int_equal(X509_add1_ext_i2d(x, NID_authority_key_identifier, ak, 0, 0), 1);
		AUTHORITY_KEYID_free(ak);
	}
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	EVP_PKEY_free(k);
	return x;
}

/* RFC 9773 4.1's example: keyIdentifier 69:88:5B:...:C8:D4 and serial
 * 0x87654321 (DER 00 87 65 43 21) give aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE */
static void test_ari_cert_id(void **state)
{
	static const unsigned char aki[] = { 0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
					     0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4 };
	static const unsigned char serial[] = { 0x87, 0x65, 0x43, 0x21 };
	static const unsigned char small[] = { 0x12, 0x34 };
	char err[256];
	(void)state;
	X509 *x = make_cert(serial, sizeof serial, aki, sizeof aki);
	char *id = ari_cert_id(x, err, sizeof err);
	assert_non_null(id);
	assert_string_equal(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
	free(id);
	X509_free(x);

	/* no leading zero when the high bit is clear */
	x = make_cert(small, sizeof small, aki, sizeof aki);
	id = ari_cert_id(x, err, sizeof err);
	assert_non_null(id);
	assert_string_equal(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.EjQ");
	free(id);
	X509_free(x);

	/* no AKI: no certID, and the reason */
	x = make_cert(serial, sizeof serial, NULL, 0);
	assert_null(ari_cert_id(x, err, sizeof err));
	assert_non_null(strstr(err, "no authority key identifier"));
	X509_free(x);
}

static void test_rfc3339(void **state)
{
	int64_t t = 0;
	(void)state;
	assert_int_equal(rfc3339_time("2025-01-02T04:00:00Z", &t), 0);
	assert_int_equal(t, 1735790400);
	assert_int_equal(rfc3339_time("2025-01-02T05:00:00+01:00", &t), 0);
	assert_int_equal(t, 1735790400);
	assert_int_equal(rfc3339_time("2025-01-01T23:30:00.123-04:30", &t), 0);
	assert_int_equal(t, 1735790400);
	assert_int_equal(rfc3339_time("2025-01-02T04:00:00", &t), -1);      /* no offset */
	assert_int_equal(rfc3339_time("2025-01-02 04:00:00Z", &t), -1);
	assert_int_equal(rfc3339_time("2025-01-02T04:00:00Zjunk", &t), -1);
	assert_int_equal(rfc3339_time("2025-01-02T04:00:00+1:00", &t), -1);
	assert_int_equal(rfc3339_time(NULL, &t), -1);
}

/* The RenewalInfo object of RFC 9773 4.2 */
static void test_ari_window(void **state)
{
	int64_t s = 0, e = 0;
	char err[256], expl[128];
	(void)state;
	assert_int_equal(ari_window("{\"suggestedWindow\": {\"start\": \"2025-01-02T04:00:00Z\","
				    " \"end\": \"2025-01-03T04:00:00Z\"},"
				    " \"explanationURL\": \"https://acme.example.com/docs/ari\"}", &s, &e, expl, sizeof expl, err, sizeof err), 0);
	assert_int_equal(s, 1735790400);
	assert_int_equal(e, 1735790400 + 86400);
	assert_string_equal(expl, "https://acme.example.com/docs/ari");
	/* end not after start, missing window, not JSON */
	assert_int_equal(ari_window("{\"suggestedWindow\": {\"start\": \"2025-01-03T04:00:00Z\","
				    " \"end\": \"2025-01-02T04:00:00Z\"}}", &s, &e, expl, sizeof expl, err, sizeof err), -1);
	assert_non_null(strstr(err, "ends before it starts"));
	assert_int_equal(ari_window("{\"explanationURL\": \"x\"}", &s, &e, expl, sizeof expl, err, sizeof err), -1);
	assert_int_equal(ari_window("not json", &s, &e, expl, sizeof expl, err, sizeof err), -1);
	assert_non_null(strstr(err, "not JSON"));
	assert_int_equal(ari_window(NULL, &s, &e, expl, sizeof expl, err, sizeof err), -1);
}

static void test_b64url_decode(void **state)
{
	unsigned char buf[64];
	(void)state;
	assert_int_equal(b64url_decode("AIdlQyE", buf, sizeof buf), 5);
	assert_memory_equal(buf, "\x00\x87\x65\x43\x21", 5);
	assert_int_equal(b64url_decode("_-8", buf, sizeof buf), 2);   /* ff ef */
	assert_memory_equal(buf, "\xff\xef", 2);
	assert_int_equal(b64url_decode("AIdlQyE=", buf, sizeof buf), 5); /* padding tolerated */
	assert_int_equal(b64url_decode("/+8", buf, sizeof buf), -1);      /* base64, not base64url */
	assert_int_equal(b64url_decode("A", buf, sizeof buf), -1);        /* impossible length */
	assert_int_equal(b64url_decode("", buf, sizeof buf), -1);
	assert_int_equal(b64url_decode("a b", buf, sizeof buf), -1);
	assert_int_equal(b64url_decode("AIdlQyE", buf, 4), -1);           /* does not fit */
	/* round trip */
	char *t = b64url((const unsigned char *)"\x01\x02\x03\xfe\xff", 5);
	assert_int_equal(b64url_decode(t, buf, sizeof buf), 5);
	assert_memory_equal(buf, "\x01\x02\x03\xfe\xff", 5);
	free(t);
}

static void no_log(void *ctx, enum fg_level l, const char *rid, const char *m)
{
	(void)ctx, (void)l, (void)rid, (void)m;
}

/* The binding: HS256 over protected.payload with the decoded key, the
 * header naming the kid and URL, the payload the account's JWK. */
static void test_eab_binding(void **state)
{
	static const struct fg_host host = { .struct_size = sizeof(struct fg_host), .log = no_log };
	struct acme a;
	char err[256];
	unsigned char mac[32], sig[64], text[512];
	unsigned int maclen = 0;
	(void)state;
	memset(&a, 0, sizeof a);
	a.host = &host;
	snprintf(a.name, sizeof a.name, "t");
	struct fg_kv kv[] = { { "eab_kid", "kid-1" },
			      { "eab_hmac_key", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W" } };
	assert_int_equal(eab_setting(&a, kv, 2, err, sizeof err), 0);
	assert_int_equal(a.eab_key_len, 48);
	EVP_PKEY *k = EVP_EC_gen("P-256");
	json_t *b = eab_binding(&a, k, "https://ca.test/new-acct", err, sizeof err);
	assert_non_null(b);
	const char *p64 = json_string_value(json_object_get(b, "protected"));
	const char *pl64 = json_string_value(json_object_get(b, "payload"));
	const char *s64 = json_string_value(json_object_get(b, "signature"));
	assert_non_null(p64);
	assert_non_null(pl64);
	assert_non_null(s64);
	long n = b64url_decode(p64, text, sizeof text - 1);
	assert_true(n > 0);
	text[n] = 0;
	json_t *prot = json_loads((char *)text, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(prot, "alg")), "HS256");
	assert_string_equal(json_string_value(json_object_get(prot, "kid")), "kid-1");
	assert_string_equal(json_string_value(json_object_get(prot, "url")), "https://ca.test/new-acct");
	assert_null(json_object_get(prot, "nonce"));
	json_decref(prot);
	n = b64url_decode(pl64, text, sizeof text - 1);
	text[n] = 0;
	json_t *jwk = json_loads((char *)text, 0, NULL), *want = jwk_of(k);
	assert_true(json_equal(jwk, want));
	json_decref(jwk);
	json_decref(want);
	char *input = NULL;
	assert_true(asprintf(&input, "%s.%s", p64, pl64) > 0);
	assert_non_null(HMAC(EVP_sha256(), a.eab_key, (int)a.eab_key_len, (unsigned char *)input, strlen(input), mac,
			     &maclen));
	assert_int_equal(b64url_decode(s64, sig, sizeof sig), 32);
	assert_memory_equal(sig, mac, 32);
	free(input);
	json_decref(b);
	EVP_PKEY_free(k);

	/* half a binding, a bad key */
	memset(&a, 0, sizeof a);
	a.host = &host;
	assert_int_equal(eab_setting(&a, kv, 1, err, sizeof err), -1);
	assert_non_null(strstr(err, "set both eab_kid and eab_hmac_key"));
	struct fg_kv bad[] = { { "eab_kid", "kid-1" }, { "eab_hmac_key", "c2hvcnQ" } };  /* 5 bytes */
	assert_int_equal(eab_setting(&a, bad, 2, err, sizeof err), -1);
	assert_non_null(strstr(err, "not a base64url HMAC key"));
}

/* A host whose result struct predates renew_after is not written past. */
static void test_result_has(void **state)
{
	struct fg_host h = { .struct_size = sizeof(struct fg_host), .result_size = sizeof(struct fg_issue_result) };
	(void)state;
	assert_true(FG_RESULT_HAS(&h, renew_after));
	h.result_size = offsetof(struct fg_issue_result, renew_after);
	assert_false(FG_RESULT_HAS(&h, renew_after));
	h.result_size = sizeof(struct fg_issue_result);
	h.struct_size = offsetof(struct fg_host, result_size);   /* an older host */
	assert_false(FG_RESULT_HAS(&h, renew_after));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ari_cert_id),
		cmocka_unit_test(test_rfc3339),
		cmocka_unit_test(test_ari_window),
		cmocka_unit_test(test_b64url_decode),
		cmocka_unit_test(test_eab_binding),
		cmocka_unit_test(test_result_has),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
