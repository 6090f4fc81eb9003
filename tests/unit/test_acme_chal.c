/*
 * Unit tests for plugins/acme/acme_chal.c: the JWK thumbprint (RFC 7638
 * 3.1's example), key authorizations (RFC 8555 8.1, with 8.3's example
 * token), the dns-01 TXT value (RFC 8555 8.4) and the dns-01 hook runner.
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
#include <time.h>
#include <unistd.h>

#include "acme_chal.h"

/* RFC 7638 3.1: the RSA key of RFC 7517 A.1, required members only, in
 * an order that is not the canonical one. */
static const char *rfc7638_jwk =
	"{\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
	"_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2"
	"QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6We"
	"Zu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\", "
	"\"kty\": \"RSA\", \"e\":\"AQAB\"}";
static const char *rfc7638_thumb = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
/* RFC 8555 8.3's example token */
static const char *rfc8555_token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";

static void test_thumbprint(void **st)
{
	char t[ACME_B64_SHA256_LEN + 1];
	(void)st;
	assert_int_equal(acme_thumbprint(rfc7638_jwk, t), 0);
	assert_string_equal(t, rfc7638_thumb);
	/* whitespace and member order do not matter; a member does */
	assert_int_equal(acme_thumbprint("{ \"e\" : \"AQAB\", \"kty\":\"RSA\", \"n\":\"AA\" }", t), 0);
	char u[ACME_B64_SHA256_LEN + 1];
	assert_int_equal(acme_thumbprint("{\"kty\":\"RSA\",\"n\":\"AA\",\"e\":\"AQAB\"}", u), 0);
	assert_string_equal(t, u);
	assert_int_equal(acme_thumbprint("{\"kty\":\"RSA\",\"n\":\"AB\",\"e\":\"AQAB\"}", u), 0);
	assert_string_not_equal(t, u);
	assert_int_equal(acme_thumbprint("[1,2]", t), -1);
	assert_int_equal(acme_thumbprint("not json", t), -1);
}

static void test_key_authorization(void **st)
{
	char ka[256];
	(void)st;
	assert_int_equal(acme_key_authorization(rfc8555_token, rfc7638_thumb, ka, sizeof ka), 0);
	assert_string_equal(ka, "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
	/* tokens that are not base64url, too short, or too long */
	assert_int_equal(acme_key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ+PCt92wr/oA", rfc7638_thumb, ka, sizeof ka), -1);
	assert_int_equal(acme_key_authorization("abc", rfc7638_thumb, ka, sizeof ka), -1);
	assert_int_equal(acme_key_authorization("../../etc/passwd/xxxxxxxxxxxxxx", rfc7638_thumb, ka, sizeof ka), -1);
	char longtok[200];
	memset(longtok, 'a', sizeof longtok - 1);
	longtok[sizeof longtok - 1] = 0;
	assert_int_equal(acme_key_authorization(longtok, rfc7638_thumb, ka, sizeof ka), -1);
	/* out too small */
	assert_int_equal(acme_key_authorization(rfc8555_token, rfc7638_thumb, ka, 50), -1);
	assert_int_equal(acme_token_ok("abc-_XYZ09"), 1);
	assert_int_equal(acme_token_ok("abc="), 0);
	assert_int_equal(acme_token_ok(""), 0);
}

static void test_dns_value(void **st)
{
	char v[ACME_B64_SHA256_LEN + 1];
	(void)st;
	/* base64url(SHA-256("evaGx...-oA.NzbLs...9Xs")), computed independently
	 * with Python's hashlib and base64.urlsafe_b64encode */
	assert_int_equal(acme_dns_value("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", v), 0);
	assert_string_equal(v, "ZTRx1Ckl1-tM05o5zaizTTA0yUy5AGereMgSNWC6Ll8");
	assert_int_equal(strlen(v), 43);
	assert_int_equal(acme_dns_value("", v), -1);
}

/* A hook script in a temp dir; returns its path (static buffer). */
static const char *script(const char *dir, const char *name, const char *body)
{
	static char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "#!/bin/sh\n%s\n", body);
	fclose(f);
	chmod(path, 0755);
	return path;
}

static void test_hook(void **st)
{
	char dir[] = "/tmp/fg-acme-hook.XXXXXX", out[256], err[512];
	const char *env[] = { "FLEETGATE_ACME_DOMAIN=a.example", "FLEETGATE_ACME_VALUE=v$(x);`y`", NULL };
	(void)st;
	assert_non_null(mkdtemp(dir));

	/* argv and environment arrive as they are: no shell in between */
	const char *p = script(dir, "ok", "echo \"$1 $FLEETGATE_ACME_DOMAIN $FLEETGATE_ACME_VALUE\"; echo err >&2");
	assert_int_equal(acme_hook_run(p, "present", env, 5, out, sizeof out, err, sizeof err), 0);
	assert_string_equal(out, "present a.example v$(x);`y`\nerr\n");

	/* a variable of the same name from the gateway's environment is not passed on */
	setenv("FLEETGATE_ACME_ACTION", "stale", 1);
	p = script(dir, "env", "echo \"[${FLEETGATE_ACME_ACTION:-unset}]\"");
	assert_int_equal(acme_hook_run(p, "present", env, 5, out, sizeof out, err, sizeof err), 0);
	assert_string_equal(out, "[unset]\n");
	unsetenv("FLEETGATE_ACME_ACTION");

	/* exit status */
	p = script(dir, "fail", "echo 'zone is read-only'; exit 3");
	assert_int_equal(acme_hook_run(p, "cleanup", env, 5, out, sizeof out, err, sizeof err), -1);
	assert_non_null(strstr(err, "exited with status 3"));
	assert_string_equal(out, "zone is read-only\n");

	/* killed by a signal */
	p = script(dir, "sig", "kill -TERM $$");
	assert_int_equal(acme_hook_run(p, "present", env, 5, out, sizeof out, err, sizeof err), -1);
	assert_non_null(strstr(err, "killed by signal 15"));

	/* timeout: killed with its children, in about the time given */
	p = script(dir, "slow", "sleep 30 & sleep 30");
	time_t t0 = time(NULL);
	assert_int_equal(acme_hook_run(p, "present", env, 1, out, sizeof out, err, sizeof err), -1);
	assert_true(time(NULL) - t0 <= 4);
	assert_non_null(strstr(err, "did not finish within 1 s"));

	/* not executable */
	char missing[600];
	snprintf(missing, sizeof missing, "%s/none", dir);
	assert_int_equal(acme_hook_run(missing, "present", env, 5, out, sizeof out, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot execute"));

	/* long output: the tail is kept */
	p = script(dir, "long", "i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done");
	assert_int_equal(acme_hook_run(p, "present", env, 5, out, sizeof out, err, sizeof err), 0);
	assert_true(strlen(out) == sizeof out - 1);
	assert_non_null(strstr(out, "line199\n"));

	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_thumbprint),
		cmocka_unit_test(test_key_authorization),
		cmocka_unit_test(test_dns_value),
		cmocka_unit_test(test_hook),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
