/*
 * Unit tests for lib/: util, wire codec, bootstrap bundles, CURVE key files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "fg_bundle.h"
#include "fg_curve.h"
#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"

static char tmpdir[64];

static int setup(void **state)
{
	(void)state;
	strcpy(tmpdir, "/tmp/fg-unit.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_durations(void **state)
{
	(void)state;
	assert_int_equal(fg_parse_duration("90d"), 90 * 86400);
	assert_int_equal(fg_parse_duration("1h"), 3600);
	assert_int_equal(fg_parse_duration("30m"), 1800);
	assert_int_equal(fg_parse_duration("45s"), 45);
	assert_int_equal(fg_parse_duration("2w"), 14 * 86400);
	assert_int_equal(fg_parse_duration("3600"), 3600);
	assert_int_equal(fg_parse_duration(""), -1);
	assert_int_equal(fg_parse_duration("-5"), -1);
	assert_int_equal(fg_parse_duration("5x"), -1);
	assert_int_equal(fg_parse_duration("5dd"), -1);
	assert_int_equal(fg_parse_duration("99999999999999999999"), -1);
}

static void test_hex_and_tokens(void **state)
{
	unsigned char in[5] = { 0x00, 0x01, 0xab, 0xff, 0x10 }, out[5];
	char hex[11], tok[FG_TOKEN_LEN + 1], tok2[FG_TOKEN_LEN + 1], h1[65], h2[65];
	(void)state;
	assert_string_equal(fg_hex(in, 5, hex), "0001abff10");
	assert_int_equal(fg_unhex("0001ABff10", out, sizeof out), 5);
	assert_memory_equal(in, out, 5);
	assert_int_equal(fg_unhex("abc", out, sizeof out), -1);
	assert_int_equal(fg_unhex("zz", out, sizeof out), -1);
	assert_int_equal(fg_unhex("00112233445566", out, sizeof out), -1);

	assert_int_equal(fg_token_new(tok), 0);
	assert_int_equal(fg_token_new(tok2), 0);
	assert_int_equal(strlen(tok), FG_TOKEN_LEN);
	assert_true(fg_token_wellformed(tok));
	assert_string_not_equal(tok, tok2);
	assert_false(fg_token_wellformed("fgt_nothex"));
	assert_false(fg_token_wellformed("xyz_0123456789abcdef0123456789abcdef"));
	fg_token_hash(tok, h1);
	fg_token_hash(tok2, h2);
	assert_int_equal(strlen(h1), 64);
	assert_string_not_equal(h1, h2);
	assert_null(strstr(h1, tok + 4));   /* the hash does not contain the token */
	fg_sha256_hex("abc", 3, h1);
	assert_string_equal(h1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_atomic_write(void **state)
{
	char path[128], *data = NULL, err[256];
	size_t len;
	struct stat sb;
	(void)state;
	snprintf(path, sizeof path, "%s/f", tmpdir);
	assert_int_equal(fg_write_file_atomic(path, "one", 3, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(fg_write_file_atomic(path, "second", 6, 0640, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
	assert_int_equal(fg_read_file(path, 100, &data, &len, err, sizeof err), 0);
	assert_string_equal(data, "second");
	free(data);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0640);
	/* a write into a missing directory fails and changes nothing */
	char bad[160];
	snprintf(bad, sizeof bad, "%s/missing/f", tmpdir);
	assert_int_equal(fg_write_file_atomic(bad, "x", 1, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), -1);
	assert_non_null(strstr(err, "missing"));
	/* read cap */
	assert_int_equal(fg_read_file(path, 3, &data, &len, err, sizeof err), -1);
	assert_non_null(strstr(err, "larger than"));
}

static void test_wire(void **state)
{
	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__CheckIn ci = FLEETGATE__CHECK_IN__INIT;
	uint8_t *buf;
	size_t len;
	char rid[33], err[256];
	(void)state;
	assert_int_equal(fg_request_id_new(rid), 0);
	assert_true(fg_request_id_valid(rid));
	assert_false(fg_request_id_valid("short"));
	assert_false(fg_request_id_valid("has space in it"));
	env.version = FG_PROTOCOL_VERSION;
	env.request_id = rid;
	env.body_case = FLEETGATE__ENVELOPE__BODY_CHECKIN;
	env.checkin = &ci;
	assert_int_equal(fg_wire_pack(&env, &buf, &len), 0);
	Fleetgate__Envelope *back = fg_wire_unpack(buf, len, 1024, err, sizeof err);
	assert_non_null(back);
	assert_string_equal(back->request_id, rid);
	assert_int_equal(back->body_case, FLEETGATE__ENVELOPE__BODY_CHECKIN);
	fg_wire_free(back);
	assert_null(fg_wire_unpack(buf, len, len - 1, err, sizeof err));
	assert_non_null(strstr(err, "exceeds"));
	free(buf);

	env.version = 7;
	assert_int_equal(fg_wire_pack(&env, &buf, &len), 0);
	assert_null(fg_wire_unpack(buf, len, 1024, err, sizeof err));
	assert_non_null(strstr(err, "version 7"));
	free(buf);

	env.version = 1;
	env.body_case = FLEETGATE__ENVELOPE__BODY__NOT_SET;
	assert_int_equal(fg_wire_pack(&env, &buf, &len), 0);
	assert_null(fg_wire_unpack(buf, len, 1024, err, sizeof err));
	free(buf);

	uint8_t garbage[64];
	memset(garbage, 0xff, sizeof garbage);
	assert_null(fg_wire_unpack(garbage, sizeof garbage, 1024, err, sizeof err));
	assert_string_equal(fg_status_name(FLEETGATE__STATUS__STATUS_UNAUTHORIZED), "unauthorized");
}

static char *self_signed_pem(void)
{
	char err[256];
	EVP_PKEY *k = fg_key_generate(FG_KEY_P256, err, sizeof err);
	X509 *x = X509_new();
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"t", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_set_pubkey(x, k);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_sign(x, k, EVP_sha256());
	char *pem = fg_cert_to_pem(x);
	X509_free(x);
	EVP_PKEY_free(k);
	return pem;
}

static void test_bundle_and_curve(void **state)
{
	char path[128], kpath[128], pub[41], sec[41], pub2[41], sec2[41], err[512];
	struct fg_bundle b, r;
	(void)state;
	snprintf(kpath, sizeof kpath, "%s/curve.key", tmpdir);
	assert_int_equal(fg_curve_load(kpath, 0, pub, sec, err, sizeof err), -1);
	assert_int_equal(fg_curve_load(kpath, 1, pub, sec, err, sizeof err), 0);
	assert_true(fg_curve_key_valid(pub));
	assert_int_equal(fg_curve_load(kpath, 0, pub2, sec2, err, sizeof err), 0);
	assert_string_equal(pub, pub2);
	assert_string_equal(sec, sec2);
	/* a public key that is not the secret's is refused */
	char other_pub[41], other_sec[41], text[128];
	zmq_curve_keypair(other_pub, other_sec);
	snprintf(text, sizeof text, "public = %s\nsecret = %s\n", other_pub, sec);
	assert_int_equal(fg_write_file_atomic(kpath, text, strlen(text), 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
	assert_int_equal(fg_curve_load(kpath, 0, pub2, sec2, err, sizeof err), -1);
	assert_non_null(strstr(err, "altered"));

	memset(&b, 0, sizeof b);
	strcpy(b.endpoint, "tcp://127.0.0.1:7700");
	strcpy(b.server_key, pub);
	assert_int_equal(fg_token_new(b.token), 0);
	strcpy(b.group, "laptops");
	b.expires = 1800000000;
	b.anchors_pem = self_signed_pem();
	snprintf(path, sizeof path, "%s/dev.bundle", tmpdir);
	assert_int_equal(fg_bundle_write(path, &b, err, sizeof err), 0);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(fg_bundle_read(path, &r, err, sizeof err), 0);
	assert_string_equal(r.endpoint, b.endpoint);
	assert_string_equal(r.server_key, b.server_key);
	assert_string_equal(r.token, b.token);
	assert_string_equal(r.group, "laptops");
	assert_int_equal(r.expires, 1800000000);
	assert_non_null(strstr(r.anchors_pem, "BEGIN CERTIFICATE"));
	fg_bundle_clear(&r);

	/* a bundle without its server key is refused, naming what is missing */
	char *bt;
	size_t bl;
	assert_int_equal(fg_read_file(path, 1 << 20, &bt, &bl, err, sizeof err), 0);
	char *line = strstr(bt, "server_key");
	line[0] = '#';
	assert_int_equal(fg_write_file_atomic(path, bt, bl, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
	free(bt);
	assert_int_equal(fg_bundle_read(path, &r, err, sizeof err), -1);
	assert_non_null(strstr(err, "server_key"));
	fg_bundle_clear(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_hex_and_tokens),
		cmocka_unit_test(test_atomic_write),
		cmocka_unit_test(test_wire),
		cmocka_unit_test(test_bundle_and_curve),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
