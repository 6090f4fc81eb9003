/*
 * Unit tests for gateway/policy_fixtures.c: loading fixtures (and refusing
 * malformed ones with a message naming the case and field), turning the
 * request into the req table the gateway builds, comparing decisions with
 * a readable diff, the fixtures path rule, and policy_validate as the hot
 * reload uses it. Also policy_new_text's entry-point checks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "policy.h"
#include "policy_fixtures.h"

struct fixture {
	char dir[64];
	char paths[8][160];
	int n;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/fg-test-fixtures.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	for (int i = 0; i < f->n; i++)
		unlink(f->paths[i]);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Write text to <dir>/name; returns the path (kept in the fixture). */
static const char *put(struct fixture *f, const char *name, const char *text)
{
	char *path = NULL;
	FILE *fp;

	for (int i = 0; i < f->n; i++)
		if (strcmp(strrchr(f->paths[i], '/') + 1, name) == 0)
			path = f->paths[i];
	if (path == NULL) {
		assert_true(f->n < 8);
		char tmp[160];
		snprintf(tmp, sizeof tmp, "%s/%s", f->dir, name);
		path = f->paths[f->n++];
		memcpy(path, tmp, sizeof tmp);
	}
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
	return path;
}

static struct policy *compile(const char *text)
{
	char err[1024] = "";
	struct policy *p = policy_new_text("t.lua", text, strlen(text), NULL, err, sizeof err);
	if (p == NULL)
		fail_msg("policy_new_text: %s", err);
	return p;
}

static struct policy_fixtures *must_load(struct fixture *f, const char *json)
{
	char err[1024] = "";
	struct policy_fixtures *fx = policy_fixtures_load(put(f, "cases.json", json), err, sizeof err);
	if (fx == NULL)
		fail_msg("policy_fixtures_load: %s", err);
	return fx;
}

/* Load json expecting failure; the message must contain want. */
static void load_fails(struct fixture *f, const char *json, const char *want)
{
	char err[1024] = "";
	struct policy_fixtures *fx = policy_fixtures_load(put(f, "cases.json", json), err, sizeof err);
	assert_null(fx);
	if (strstr(err, want) == NULL)
		fail_msg("error '%s' does not contain '%s'", err, want);
}

/* Run and capture the report. Returns policy_fixtures_run's result;
 * *out is malloc'd. */
static int run(struct policy_fixtures *fx, struct policy *p, struct policy_fixtures_result *res,
	       char **out)
{
	size_t len = 0;
	FILE *mem = open_memstream(out, &len);
	int rc;

	assert_non_null(mem);
	rc = policy_fixtures_run(fx, p, mem, res);
	fclose(mem);
	return rc;
}

static const char *const echo_policy =
	"function enroll(req)\n"
	"  if req.slot == 'deny' then return deny('slot ' .. req.slot .. ' is closed (code 42)') end\n"
	"  if req.slot == 'boom' then local x = nil; return x.y end\n"
	"  local f = req.facts\n"
	"  local parts = { req.protocol, req.request_id, tostring(req.renew), tostring(req.new_device),\n"
	"    req.device.id or '-', req.device.group or '-', req.device.hostname or '-',\n"
	"    req.token and (req.token.group or '') or 'notoken',\n"
	"    f.os_id or '-', f.os_version or '-', f.kernel_release or '-', f.arch or '-',\n"
	"    tostring(f.secure_boot), tostring(f.tpm_present),\n"
	"    req.csr.cn or '-', req.csr.key_type or '-', req.csr.curve or '-', tostring(req.csr.key_bits),\n"
	"    table.concat(req.csr.dns, '+') }\n"
	"  return allow{ profile = 'p', backend = 'b', challenge = 'c-' .. (req.device.id or ''),\n"
	"    cn = table.concat(parts, '|'), dns = req.csr.dns, validity = fleet.hours(2) }\n"
	"end\n";

/* Every request field reaches Lua as the gateway would put it there. */
static void test_request_fields(void **state)
{
	struct fixture *f = *state;
	struct policy *p = compile(echo_policy);
	struct policy_fixtures *fx = must_load(f,
		"[{\"name\": \"full\", \"request\": {\"renew\": true, \"slot\": \"x\",\n"
		"  \"device\": {\"id\": \"dev_1\", \"group\": \"g\", \"hostname\": \"h\"},\n"
		"  \"token\": {\"group\": \"tg\"},\n"
		"  \"facts\": {\"os_id\": \"fedora\", \"os_version\": \"40\", \"kernel_release\": \"6.9.1\",\n"
		"             \"arch\": \"aarch64\", \"secure_boot\": false, \"tpm_present\": true},\n"
		"  \"csr\": {\"cn\": \"c\", \"dns\": [\"a.example\", \"b.example\"], \"key_type\": \"ec\",\n"
		"           \"curve\": \"P-384\", \"key_bits\": 384}},\n"
		" \"expect\": {\"allow\": true, \"profile\": \"p\", \"backend\": \"b\", \"challenge\": \"c-dev_1\",\n"
		"  \"cn\": \"zmq|fixture-1|true|false|dev_1|g|h|tg|fedora|40|6.9.1|aarch64|false|true|c|ec|P-384|384|a.example+b.example\",\n"
		"  \"dns\": [\"a.example\", \"b.example\"], \"validity\": 7200}},\n"
		" {\"name\": \"empty\", \"request\": {\"request_id\": \"r9\", \"token\": {}},\n"
		"  \"expect\": {\"allow\": true, \"cn\": \"zmq|r9|false|false|-|-|-||-|-|-|-|nil|false|-|-|-|nil|\", \"dns\": []}},\n"
		" {\"name\": \"null token, unknown secure boot\", \"request\": {\"token\": null, \"facts\": {\"secure_boot\": null}},\n"
		"  \"expect\": {\"allow\": true, \"cn\": \"zmq|fixture-3|false|false|-|-|-|notoken|-|-|-|-|nil|false|-|-|-|nil|\"}}]");
	struct policy_fixtures_result res;
	char *out = NULL;

	assert_int_equal(policy_fixtures_count(fx), 3);
	int rc = run(fx, p, &res, &out);
	if (rc != 0)
		fail_msg("%s", out);
	assert_int_equal(res.passed, 3);
	assert_int_equal(res.failed, 0);
	assert_string_equal(out, "ok - full\nok - empty\nok - null token, unknown secure boot\n");
	free(out);
	policy_fixtures_free(fx);
	policy_free(p);
}

/* Mismatches: one readable line per differing field, the first in res. */
static void test_diff(void **state)
{
	struct fixture *f = *state;
	struct policy *p = compile(echo_policy);
	struct policy_fixtures *fx = must_load(f,
		"[{\"name\": \"fields\", \"request\": {\"device\": {\"id\": \"d\"}, \"csr\": {\"dns\": [\"x\"]}},\n"
		"  \"expect\": {\"allow\": true, \"profile\": \"server\", \"dns\": [\"y\", \"z\"], \"validity\": 60,\n"
		"             \"challenge\": \"c-d\"}},\n"
		" {\"name\": \"wanted deny\", \"request\": {}, \"expect\": {\"allow\": false}},\n"
		" {\"name\": \"wanted allow\", \"request\": {\"slot\": \"deny\"}, \"expect\": {\"allow\": true}},\n"
		" {\"name\": \"substring\", \"request\": {\"slot\": \"deny\"}, \"expect\": {\"allow\": false, \"reason_match\": \"is closed (code\"}},\n"
		" {\"name\": \"regex\", \"request\": {\"slot\": \"deny\"}, \"expect\": {\"allow\": false, \"reason_match\": \"^slot [a-z]+ is closed \\\\(code [0-9]+\\\\)$\"}},\n"
		" {\"name\": \"no match\", \"request\": {\"slot\": \"deny\"}, \"expect\": {\"allow\": false, \"reason_match\": \"^open\"}},\n"
		" {\"name\": \"exact reason\", \"request\": {\"slot\": \"deny\"}, \"expect\": {\"allow\": false, \"reason\": \"slot deny\"}},\n"
		" {\"name\": \"runtime error\", \"request\": {\"slot\": \"boom\"}, \"expect\": {\"allow\": true}}]");
	struct policy_fixtures_result res;
	char *out = NULL;

	assert_int_equal(run(fx, p, &res, &out), -1);
	assert_int_equal(res.passed, 2);
	assert_int_equal(res.failed, 6);
	assert_non_null(strstr(out, "not ok - fields\n"
				    "  profile: got 'p', want 'server'\n"
				    "  dns: got ['x'], want ['y', 'z']\n"
				    "  validity: got 7200, want 60\n"
				    "not ok - wanted deny\n  allow: got true"));
	assert_non_null(strstr(out, "not ok - wanted allow\n  allow: got false (deny: 'slot deny is closed (code 42)'), want true\n"));
	assert_non_null(strstr(out, "ok - substring\nok - regex\n"));
	assert_non_null(strstr(out, "not ok - no match\n  reason: got 'slot deny is closed (code 42)', want a match for '^open'\n"));
	assert_non_null(strstr(out, "not ok - exact reason\n  reason: got 'slot deny is closed (code 42)', want 'slot deny'\n"));
	assert_non_null(strstr(out, "not ok - runtime error\n  error: the policy failed: t.lua:3:"));
	assert_string_equal(res.first_failure,
			    "cases.json: case 'fields': profile: got 'p', want 'server' (and more)");
	free(out);
	policy_fixtures_free(fx);
	policy_free(p);
}

/* A policy that names no profile matches an expected "default". */
static void test_default_profile(void **state)
{
	struct fixture *f = *state;
	struct policy *p = compile("function enroll(req) return allow{ cn = 'x' } end");
	struct policy_fixtures *fx = must_load(f,
		"{\"name\": \"one\", \"request\": {}, \"expect\": {\"allow\": true, \"profile\": \"default\", \"cn\": \"x\"}}");
	struct policy_fixtures_result res;

	assert_int_equal(policy_fixtures_run(fx, p, NULL, &res), 0);
	assert_int_equal(res.passed, 1);
	policy_fixtures_free(fx);
	policy_free(p);
}

/* Malformed fixtures are refused, naming the case and what to fix. */
static void test_load_errors(void **state)
{
	struct fixture *f = *state;
	char err[512] = "";

	load_fails(f, "[{\"name\": \"x\",\n \"request\": {}\n", "cases.json:3:");
	load_fails(f, "[]", "non-empty list of cases");
	load_fails(f, "42", "cases.json:1:2: '[' or '{' expected");
	load_fails(f, "[1]", "case 1 'case 1': must be an object");
	load_fails(f, "{\"name\": \"n\", \"request\": {}}", "case 1 'n': needs both");
	load_fails(f, "{\"name\": \"n\", \"request\": {}, \"expect\": {\"allow\": true}, \"extra\": 1}",
		   "unknown field 'extra'");
	load_fails(f, "[{\"request\": {}, \"expect\": {\"allow\": true}},"
		      " {\"name\": \"typo\", \"request\": {\"facts\": {\"secureboot\": true}}, \"expect\": {\"allow\": true}}]",
		   "case 2 'typo': request.facts: unknown field 'secureboot'; valid fields are hostname,");
	load_fails(f, "{\"name\": \"n\", \"request\": {\"cnn\": 1}, \"expect\": {\"allow\": true}}",
		   "request: unknown field 'cnn'; valid fields are protocol, request_id, slot, renew, new_device, profile, device, token, facts, csr");
	load_fails(f, "{\"name\": \"n\", \"request\": {\"renew\": \"yes\"}, \"expect\": {\"allow\": true}}",
		   "request.renew must be true or false");
	load_fails(f, "{\"name\": \"n\", \"request\": {\"csr\": {\"dns\": \"a\"}}, \"expect\": {\"allow\": true}}",
		   "request.csr.dns must be a list of strings");
	load_fails(f, "{\"name\": \"n\", \"request\": {\"csr\": {\"key_bits\": \"256\"}}, \"expect\": {\"allow\": true}}",
		   "request.csr.key_bits must be a whole number");
	load_fails(f, "{\"name\": \"n\", \"request\": {}, \"expect\": {\"cn\": \"x\"}}",
		   "expect.allow must be true or false");
	load_fails(f, "{\"name\": \"n\", \"request\": {}, \"expect\": {\"allow\": true, \"cnn\": \"x\"}}",
		   "expect: unknown field 'cnn'");
	load_fails(f, "{\"name\": \"n\", \"request\": {}, \"expect\": {\"allow\": true, \"reason_match\": \"x\"}}",
		   "expect.reason_match only applies when allow is false");
	load_fails(f, "{\"name\": \"n\", \"request\": {}, \"expect\": {\"allow\": false, \"cn\": \"x\"}}",
		   "expect.cn only applies when allow is true");
	load_fails(f, "{\"name\": \"n\", \"request\": {}, \"expect\": {\"allow\": true, \"validity\": \"30d\"}}",
		   "expect.validity must be a positive whole number");
	assert_null(policy_fixtures_load("/nonexistent/cases.json", err, sizeof err));
	assert_non_null(strstr(err, "/nonexistent/cases.json"));
}

static void test_fixtures_path(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(policy_fixtures_path("/etc/fg/policy.lua", out, sizeof out), 0);
	assert_string_equal(out, "/etc/fg/policy.tests.json");
	assert_int_equal(policy_fixtures_path("rules", out, sizeof out), 0);
	assert_string_equal(out, "rules.tests.json");
	assert_int_equal(policy_fixtures_path("/a/very/long/path/that/does/not/fit/in/sixty-four/bytes.lua",
					      out, sizeof out), -1);
}

/* policy_validate: what a hot reload checks before the swap. */
static void test_validate(void **state)
{
	struct fixture *f = *state;
	const char *good = "function enroll(req) return allow{ cn = 'ok' } end\n";
	const char *path = put(f, "p.lua", good);
	char err[2048] = "";
	size_t n = 99;

	assert_int_equal(policy_validate(path, good, strlen(good), NULL, &n, err, sizeof err), 0);
	assert_int_equal(n, 0);   /* no fixtures file */

	put(f, "p.tests.json", "[{\"name\": \"a\", \"request\": {}, \"expect\": {\"allow\": true, \"cn\": \"ok\"}},"
			       " {\"name\": \"b\", \"request\": {}, \"expect\": {\"allow\": true}}]");
	assert_int_equal(policy_validate(path, good, strlen(good), NULL, &n, err, sizeof err), 0);
	assert_int_equal(n, 2);

	const char *other = "function enroll(req) return allow{ cn = 'changed' } end\n";
	assert_int_equal(policy_validate(path, other, strlen(other), NULL, &n, err, sizeof err), -1);
	assert_non_null(strstr(err, "1 of 2 fixtures failed; first: p.tests.json: case 'a': cn: got 'changed', want 'ok'"));

	const char *broken = "function enroll(req)\n  return allow{\nend\n";
	assert_int_equal(policy_validate(path, broken, strlen(broken), NULL, &n, err, sizeof err), -1);
	assert_non_null(strstr(err, "p.lua:3:"));

	put(f, "p.tests.json", "{ not json");
	assert_int_equal(policy_validate(path, good, strlen(good), NULL, &n, err, sizeof err), -1);
	assert_non_null(strstr(err, "p.tests.json:1:"));
}

/* Entry points: enroll must be a function; checkin optional but a function. */
static void test_entry_points(void **state)
{
	static const struct { const char *text, *want; } cases[] = {
		{ "x = 1", "defines no enroll(req) function" },
		{ "enroll = 'yes'", "defines no enroll(req) function (enroll is a string value)" },
		{ "function enroll(r) return deny('x') end\ncheckin = 3", "checkin is a number value" },
		{ "function enroll(r) return deny('x') end\nerror('at load')", "t.lua:2: at load" },
	};
	char err[1024];
	struct policy *p;

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		err[0] = '\0';
		p = policy_new_text("t.lua", cases[i].text, strlen(cases[i].text), NULL, err, sizeof err);
		assert_null(p);
		if (strstr(err, cases[i].want) == NULL)
			fail_msg("case %zu: '%s' does not contain '%s'", i, err, cases[i].want);
	}
	p = compile("function enroll(r) return deny('x') end\nfunction checkin(d) return {} end");
	assert_string_equal(policy_name(p), "t.lua");
	policy_free(p);
}

/* The shipped default policy passes its own fixtures. */
static void test_default_policy_fixtures(void **state)
{
	const char *root = getenv("FG_SOURCE_ROOT");
	char lua[1024], json[1024], err[1024] = "";
	struct policy *p;
	struct policy_fixtures *fx;
	struct policy_fixtures_result res;

	(void)state;
	if (root == NULL)
		skip();
	snprintf(lua, sizeof lua, "%s/policies/default.lua", root);
	snprintf(json, sizeof json, "%s/policies/default.tests.json", root);
	p = policy_new(lua, NULL, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	fx = policy_fixtures_load(json, err, sizeof err);
	if (fx == NULL)
		fail_msg("%s", err);
	assert_int_equal(policy_fixtures_run(fx, p, NULL, &res), 0);
	assert_true(res.passed >= 3);
	policy_fixtures_free(fx);
	policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_request_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_diff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_profile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
		cmocka_unit_test(test_fixtures_path),
		cmocka_unit_test_setup_teardown(test_validate, setup, teardown),
		cmocka_unit_test(test_entry_points),
		cmocka_unit_test(test_default_policy_fixtures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
