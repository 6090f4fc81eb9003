/*
 * Unit tests for gateway/policy.c and gateway/lua_sandbox.c: the default
 * policy's decisions, the shape of req, strict reading of decisions, the
 * sandbox (no os/io/load/require/string.dump, text chunks only) and the
 * memory and instruction caps, after which the same state must still work.
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

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "policy.h"

extern const char fg_default_policy[];
extern const size_t fg_default_policy_len;

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/fg-test-policy.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Write text to <dir>/name and return the path (in the fixture). */
static const char *write_policy(struct fixture *f, const char *name, const void *text, size_t len)
{
	FILE *fp;
	if (f->path[0])
		unlink(f->path);
	snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
	fp = fopen(f->path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(text, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
	return f->path;
}

static struct policy *load_text(struct fixture *f, const char *name, const char *text,
				const struct policy_limits *lim, char *err, size_t errlen)
{
	return policy_new(write_policy(f, name, text, strlen(text)), lim, err, errlen);
}

static struct policy *must_load(struct fixture *f, const char *text, const struct policy_limits *lim)
{
	char err[512] = "";
	struct policy *p = load_text(f, "policy.lua", text, lim, err, sizeof err);
	if (p == NULL)
		fail_msg("policy_new: %s", err);
	return p;
}

/* A typical enrollment request: a new laptop holding a token. */
static struct policy_request sample_request(void)
{
	static const char *const dns[] = { "laptop-01.example.com", "laptop-01" };
	struct policy_request r;
	memset(&r, 0, sizeof r);
	r.protocol = "zmq";
	r.request_id = "req-1";
	r.slot = "default";
	r.new_device = 1;
	r.device_id = "dev_0011223344556677";
	r.device_group = "laptops";
	r.device_hostname = "Laptop-01.Example.COM";
	r.token_group = "laptops";
	r.facts.hostname = "Laptop-01.Example.COM";
	r.facts.machine_id = "0123456789abcdef0123456789abcdef";
	r.facts.os_id = "debian";
	r.facts.os_version = "12";
	r.facts.os_pretty_name = "";
	r.facts.kernel_release = "6.1.0-13-amd64";
	r.facts.arch = "x86_64";
	r.facts.secure_boot = -1;
	r.facts.tpm_present = 1;
	r.csr_cn = "laptop-01";
	r.csr_dns = dns;
	r.csr_ndns = 2;
	r.csr_key_type = "ec";
	r.csr_curve = "P-256";
	r.csr_key_bits = 256;
	return r;
}

/* ---- the default policy ---- */

static struct policy *load_default(struct fixture *f)
{
	char err[512] = "";
	struct policy *p = policy_new(write_policy(f, "policy.lua", fg_default_policy,
						   fg_default_policy_len), NULL, err, sizeof err);
	if (p == NULL)
		fail_msg("default policy: %s", err);
	return p;
}

static void test_default_token_allows(void **state)
{
	struct policy *p = load_default(*state);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_true(d.allow);
	assert_string_equal(d.profile, "default");
	assert_string_equal(d.cn, "laptop-01.example.com");
	assert_int_equal(d.ndns, 1);
	assert_string_equal(d.dns[0], "laptop-01.example.com");
	assert_int_equal(d.nip, 0);
	assert_int_equal(d.validity, 30 * 86400);
	assert_string_equal(d.reason, "");
	policy_decision_clear(&d);
	assert_int_equal(d.ndns, 0);
	policy_free(p);
}

static void test_default_no_token_denies(void **state)
{
	struct policy *p = load_default(*state);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	r.token_group = NULL;
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_false(d.allow);
	assert_non_null(strstr(d.reason, "no enrollment token"));
	assert_string_equal(d.cn, "");
	assert_int_equal(d.ndns, 0);
	policy_decision_clear(&d);
	policy_free(p);
}

static void test_default_renew_allows(void **state)
{
	struct policy *p = load_default(*state);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	r.token_group = NULL;
	r.new_device = 0;
	r.renew = 1;
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_true(d.allow);
	assert_string_equal(d.cn, "laptop-01.example.com");
	policy_decision_clear(&d);

	/* no hostname reported: denied with a reason, not an error */
	r.facts.hostname = NULL;
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_false(d.allow);
	assert_non_null(strstr(d.reason, "no hostname"));
	policy_decision_clear(&d);

	/* a hostname that is not a DNS name */
	r.facts.hostname = "bad host";
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_false(d.allow);
	assert_non_null(strstr(d.reason, "not a valid DNS name"));
	policy_decision_clear(&d);
	policy_free(p);
}

/* ---- req as the policy sees it ---- */

static void test_request_shape(void **state)
{
	static const char text[] =
		"function enroll(req)\n"
		"  local f, c = req.facts, req.csr\n"
		"  return deny(table.concat({\n"
		"    req.protocol, req.request_id, req.slot, tostring(req.renew), tostring(req.new_device),\n"
		"    req.device.id, req.device.group, req.device.hostname, tostring(req.token and req.token.group),\n"
		"    f.hostname, f.os_id, tostring(f.os_pretty_name), tostring(f.secure_boot), tostring(f.tpm_present),\n"
		"    tostring(f.dmi_product_serial), c.cn, #c.dns, c.dns[1], c.dns[2], c.key_type, c.curve,\n"
		"    math.type(c.key_bits), c.key_bits }, '|'))\n"
		"end\n";
	struct policy *p = must_load(*state, text, NULL);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_false(d.allow);
	assert_string_equal(d.reason,
			    "zmq|req-1|default|false|true|dev_0011223344556677|laptops|Laptop-01.Example.COM|laptops|"
			    "Laptop-01.Example.COM|debian|nil|nil|true|nil|laptop-01|2|laptop-01.example.com|laptop-01|"
			    "ec|P-256|integer|256");
	policy_decision_clear(&d);

	r.facts.secure_boot = 0;
	r.token_group = NULL;
	r.renew = 1;
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_non_null(strstr(d.reason, "|true|true|dev_"));        /* renew, new_device */
	assert_non_null(strstr(d.reason, "|Laptop-01.Example.COM|nil|"));   /* no token */
	assert_non_null(strstr(d.reason, "|nil|false|true|"));        /* pretty name, secure boot, tpm */
	policy_decision_clear(&d);

	r.facts.secure_boot = 1;
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_non_null(strstr(d.reason, "|nil|true|true|"));
	policy_decision_clear(&d);
	policy_free(p);
}

static void test_helpers(void **state)
{
	static const char text[] =
		"assert(fleet.days(2) == 172800 and math.type(fleet.days(2)) == 'integer')\n"
		"assert(fleet.hours(1.5) == 5400 and math.type(fleet.hours(1.5)) == 'integer')\n"
		"assert(fleet.has_suffix('a.example.com', '.example.com'))\n"
		"assert(not fleet.has_suffix('a.example.org', '.example.com'))\n"
		"assert(not fleet.has_suffix('com', '.example.com'))\n"
		"fleet.log('policy loaded')\n"
		"print('debug line', 1, true, nil)\n"
		"function enroll(req)\n"
		"  return allow{ backend = 'local', profile = 'server', cn = 'h', dns = { 'h.example.com' },\n"
		"                ip = { '10.0.0.1', '::1' }, email = { 'ops@example.com' },\n"
		"                validity = fleet.days(1.5), challenge = 'secret' }\n"
		"end\n";
	struct policy *p = must_load(*state, text, NULL);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_true(d.allow);
	assert_string_equal(d.backend, "local");
	assert_string_equal(d.profile, "server");
	assert_string_equal(d.cn, "h");
	assert_int_equal(d.ndns, 1);
	assert_int_equal(d.nip, 2);
	assert_string_equal(d.ip[1], "::1");
	assert_int_equal(d.nemail, 1);
	assert_string_equal(d.email[0], "ops@example.com");
	assert_int_equal(d.validity, 129600);
	assert_string_equal(d.challenge, "secret");
	policy_decision_clear(&d);
	policy_free(p);
}

/* keygen = "server" | "device" is taken, anything else refused;
 * req.backend_csrattrs shows what the backends' CAs ask of CSRs. */
static void test_keygen_and_csrattrs(void **state)
{
	static const char text[] =
		"function enroll(req)\n"
		"  local a = req.backend_csrattrs['est-corp']\n"
		"  if req.slot == 'attrs' then\n"
		"    return deny(a.key_type .. '|' .. #a.oids .. '|' .. a.oids[2] .. '|' .. tostring(req.backend_csrattrs.other))\n"
		"  end\n"
		"  if req.slot == 'anchors' then return allow{ anchors = true } end\n"
		"  if req.slot == 'badanchors' then return allow{ anchors = 'yes' } end\n"
		"  return allow{ keygen = req.slot }\n"
		"end\n";
	static const char *const oids[] = { "challengePassword", "ecdsa-with-SHA384" };
	struct policy_csrattrs ca = { "est-corp", "p384", oids, 2 };
	struct policy *p = must_load(*state, text, NULL);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	r.backend_csrattrs = &ca;
	r.nbackend_csrattrs = 1;
	r.slot = "attrs";
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_false(d.allow);
	assert_string_equal(d.reason, "p384|2|ecdsa-with-SHA384|nil");
	policy_decision_clear(&d);

	r.slot = "server";
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_true(d.allow);
	assert_string_equal(d.keygen, "server");
	policy_decision_clear(&d);

	r.slot = "anchors";
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_true(d.allow);
	assert_true(d.anchors);
	policy_decision_clear(&d);

	r.slot = "badanchors";
	assert_int_not_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_non_null(strstr(err, "anchors must be true or false, not string"));
	policy_decision_clear(&d);

	r.slot = "tpm";
	assert_int_not_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_non_null(strstr(err, "keygen must be \"server\" or \"device\", not 'tpm'"));
	policy_decision_clear(&d);
	policy_free(p);
}

/* ---- load-time errors ---- */

static void test_syntax_error(void **state)
{
	char err[512] = "";
	struct policy *p = load_text(*state, "broken.lua",
				     "function enroll(req)\n  return allow{\nend\n", NULL, err, sizeof err);
	assert_null(p);
	assert_non_null(strstr(err, "broken.lua:3:"));
}

static void test_no_enroll(void **state)
{
	char err[512] = "";
	struct policy *p = load_text(*state, "policy.lua", "function checkin(dev) return {} end\n",
				     NULL, err, sizeof err);
	assert_null(p);
	assert_non_null(strstr(err, "policy.lua defines no enroll(req) function"));

	p = load_text(*state, "policy.lua", "enroll = 5\n", NULL, err, sizeof err);
	assert_null(p);
	assert_non_null(strstr(err, "defines no enroll(req) function"));
}

static void test_missing_file(void **state)
{
	struct fixture *f = *state;
	char err[512] = "", path[160];
	snprintf(path, sizeof path, "%s/absent.lua", f->dir);
	assert_null(policy_new(path, NULL, err, sizeof err));
	assert_non_null(strstr(err, "absent.lua"));
}

static void test_load_time_loop(void **state)
{
	struct policy_limits lim = { 4u << 20, 100000 };
	char err[512] = "";
	struct policy *p = load_text(*state, "loop.lua",
				     "while true do end\nfunction enroll(req) end\n", &lim, err, sizeof err);
	assert_null(p);
	assert_non_null(strstr(err, "loop.lua:1:"));
	assert_non_null(strstr(err, "instruction limit (100000)"));
}

/* A binary chunk made by an ordinary Lua state (lua_dump, what string.dump
 * does) is refused: only source text is accepted. */
struct dump_buf {
	char *data;
	size_t len;
};

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
	struct dump_buf *b = ud;
	char *n = realloc(b->data, b->len + sz);
	(void)L;
	if (n == NULL)
		return 1;
	memcpy(n + b->len, p, sz);
	b->data = n;
	b->len += sz;
	return 0;
}

static void test_binary_chunk_refused(void **state)
{
	lua_State *L = luaL_newstate();
	struct dump_buf b = { NULL, 0 };
	char err[512] = "";
	struct policy *p;

	assert_non_null(L);
	luaL_openlibs(L);
	assert_int_equal(luaL_loadstring(L, "function enroll(req) return allow{ cn = 'x' } end"), LUA_OK);
	assert_int_equal(lua_dump(L, dump_writer, &b, 0), 0);
	lua_close(L);
	assert_true(b.len > 4 && b.data[0] == 0x1b);
	p = policy_new(write_policy(*state, "binary.lua", b.data, b.len), NULL, err, sizeof err);
	free(b.data);
	assert_null(p);
	assert_non_null(strstr(err, "binary"));
	assert_non_null(strstr(err, "binary.lua"));
}

/* ---- the sandbox ---- */

static void test_sandbox_globals(void **state)
{
	static const char text[] =
		"function enroll(req)\n"
		"  local found = {}\n"
		"  for _, n in ipairs{ 'os', 'io', 'load', 'loadstring', 'dofile', 'loadfile', 'require',\n"
		"                      'collectgarbage', 'debug', 'package', 'coroutine' } do\n"
		"    if _G[n] ~= nil then found[#found + 1] = n end\n"
		"  end\n"
		"  local smt = getmetatable('')\n"
		"  if string.dump ~= nil then found[#found + 1] = 'string.dump' end\n"
		"  if smt.__index ~= string then found[#found + 1] = 'string metatable' end\n"
		"  if smt.__index.dump ~= nil then found[#found + 1] = 'dump via metatable' end\n"
		"  for k, v in pairs(smt.__index) do\n"
		"    if type(v) ~= 'function' then found[#found + 1] = 'string.' .. k end\n"
		"  end\n"
		"  if ('x').dump ~= nil then found[#found + 1] = 'method dump' end\n"
		"  if type(string.format) ~= 'function' or type(table.concat) ~= 'function' or\n"
		"     type(math.floor) ~= 'function' or type(utf8.char) ~= 'function' then\n"
		"    found[#found + 1] = 'a needed library is missing'\n"
		"  end\n"
		"  return deny(#found == 0 and 'none' or table.concat(found, ','))\n"
		"end\n";
	struct policy *p = must_load(*state, text, NULL);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_string_equal(d.reason, "none");
	policy_decision_clear(&d);
	policy_free(p);
}

static void test_sandbox_calls_fail(void **state)
{
	static const char *const exprs[] = {
		"os.execute('touch /tmp/fleetgate-policy-escaped')",
		"io.open('/etc/passwd')",
		"load('return 1')",
		"require('os')",
		"string.dump(enroll)",
		"dofile('/etc/passwd')",
		"loadfile('/etc/passwd')",
		"collectgarbage()",
		"getmetatable('').__index.dump(enroll)",
		"('x'):dump()",
		"debug.getinfo(1)",
		"package.loadlib('libc.so.6', 'system')",
	};
	struct policy_request r = sample_request();
	struct policy_decision d;
	char text[512], err[512];

	for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
		struct policy *p;
		snprintf(text, sizeof text,
			 "function enroll(req)\n  return %s\nend\n", exprs[i]);
		p = must_load(*state, text, NULL);
		err[0] = '\0';
		if (policy_enroll(p, &r, &d, err, sizeof err) != -1)
			fail_msg("'%s' did not fail", exprs[i]);
		if (strstr(err, "nil value") == NULL || strstr(err, "policy.lua:2:") == NULL)
			fail_msg("'%s': unexpected error '%s'", exprs[i], err);
		assert_false(d.allow);
		policy_free(p);
	}
	assert_int_not_equal(access("/tmp/fleetgate-policy-escaped", F_OK), 0);
}

static void test_gc_metamethod_refused(void **state)
{
	static const char text[] =
		"function enroll(req)\n"
		"  setmetatable({}, { __gc = function() while true do end end })\n"
		"  return deny('x')\n"
		"end\n";
	struct policy *p = must_load(*state, text, NULL);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), -1);
	assert_non_null(strstr(err, "__gc"));
	assert_non_null(strstr(err, "policy.lua:2:"));
	policy_free(p);
}

/* ---- caps and runtime errors; the state stays usable ---- */

static const char limits_policy[] =
	"function enroll(req)\n"
	"  if req.slot == 'loop' then\n"
	"    while true do end\n"
	"  elseif req.slot == 'pcall-loop' then\n"
	"    while true do pcall(function() while true do end end) end\n"
	"  elseif req.slot == 'swallow' then\n"
	"    return pcall(function() while true do end end)\n"
	"  elseif req.slot == 'string' then\n"
	"    local s = 'x'\n"
	"    while true do s = s .. s end\n"
	"  elseif req.slot == 'rep' then\n"
	"    return deny(string.rep('x', 1 << 30))\n"
	"  elseif req.slot == 'table' then\n"
	"    local t = {}\n"
	"    for i = 1, 1e9 do t[i] = i end\n"
	"  elseif req.slot == 'error' then\n"
	"    local x = nil\n"
	"    return x.field\n"
	"  elseif req.slot == 'raise' then\n"
	"    error({ code = 1 })\n"
	"  elseif req.slot == 'xpcall-loop' then\n"
	"    return xpcall(function() while true do end end, function(m) while true do end end)\n"
	"  elseif req.slot == 'xpcall' then\n"
	"    local ok, v = xpcall(function(a) error('boom ' .. a, 0) end, function(m) return 'got ' .. m end, 'z')\n"
	"    return allow{ cn = tostring(ok) .. ' ' .. v }\n"
	"  end\n"
	"  return allow{ cn = 'ok', dns = { 'ok.example.com' } }\n"
	"end\n";

/* Run slot; expect -1 and err containing want; then a normal call on the
 * same policy must succeed. */
static void expect_fail_then_ok(struct policy *p, const char *slot, const char *want)
{
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	r.slot = slot;
	if (policy_enroll(p, &r, &d, err, sizeof err) != -1)
		fail_msg("slot %s did not fail", slot);
	if (strstr(err, want) == NULL)
		fail_msg("slot %s: '%s' lacks '%s'", slot, err, want);
	assert_false(d.allow);
	assert_int_equal(d.ndns, 0);

	r.slot = "ok";
	err[0] = '\0';
	if (policy_enroll(p, &r, &d, err, sizeof err) != 0)
		fail_msg("after slot %s, a normal call failed: %s", slot, err);
	assert_true(d.allow);
	assert_string_equal(d.cn, "ok");
	assert_string_equal(d.dns[0], "ok.example.com");
	policy_decision_clear(&d);
}

static void test_instruction_limit(void **state)
{
	struct policy_limits lim = { 4u << 20, 200000 };
	struct policy *p = must_load(*state, limits_policy, &lim);

	expect_fail_then_ok(p, "loop", "instruction limit (200000)");
	expect_fail_then_ok(p, "loop", "policy.lua:3:");
	expect_fail_then_ok(p, "pcall-loop", "instruction limit");
	expect_fail_then_ok(p, "swallow", "instruction limit");
	/* a looping xpcall message handler is under the cap too */
	expect_fail_then_ok(p, "xpcall-loop", "instruction limit");
	/* the budget is per call: many normal calls in a row all pass */
	for (int i = 0; i < 50; i++)
		expect_fail_then_ok(p, "loop", "instruction limit");
	policy_free(p);
}

static void test_memory_limit(void **state)
{
	struct policy_limits lim = { 1u << 20, 50000000 };
	struct policy *p = must_load(*state, limits_policy, &lim);

	expect_fail_then_ok(p, "string", "memory limit (1048576 bytes)");
	expect_fail_then_ok(p, "rep", "memory limit");
	expect_fail_then_ok(p, "table", "memory limit");
	for (int i = 0; i < 5; i++)
		expect_fail_then_ok(p, "table", "policy exceeded its memory limit");
	policy_free(p);
}

static void test_runtime_error(void **state)
{
	struct policy *p = must_load(*state, limits_policy, NULL);

	expect_fail_then_ok(p, "error", "policy.lua:18: attempt to index a nil value");
	expect_fail_then_ok(p, "raise", "policy.lua:20: error object is a table value");
	policy_free(p);
}

/* xpcall still works for policies: the handler sees the error. */
static void test_xpcall(void **state)
{
	struct policy *p = must_load(*state, limits_policy, NULL);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	r.slot = "xpcall";
	assert_int_equal(policy_enroll(p, &r, &d, err, sizeof err), 0);
	assert_true(d.allow);
	assert_string_equal(d.cn, "false got boom z");
	policy_decision_clear(&d);
	policy_free(p);
}

/* ---- strict reading of decisions ---- */

static void expect_bad_return(struct fixture *f, const char *body, const char *want)
{
	char text[1024], err[512] = "";
	struct policy_request r = sample_request();
	struct policy_decision d;
	struct policy *p;

	snprintf(text, sizeof text, "function enroll(req)\n  %s\nend\n", body);
	p = must_load(f, text, NULL);
	if (policy_enroll(p, &r, &d, err, sizeof err) != -1)
		fail_msg("'%s' was accepted", body);
	if (strstr(err, want) == NULL)
		fail_msg("'%s': '%s' lacks '%s'", body, err, want);
	assert_false(d.allow);
	assert_int_equal(d.ndns + d.nip + d.nemail, 0);
	policy_free(p);
}

static void test_bad_returns(void **state)
{
	struct fixture *f = *state;

	expect_bad_return(f, "return 42", "enroll(req) returned a number");
	expect_bad_return(f, "return", "enroll(req) returned nothing");
	expect_bad_return(f, "return 'allow'", "returned a string");
	expect_bad_return(f, "return {}", "not a decision");
	expect_bad_return(f, "return { allow = 'yes' }", "not a decision");
	expect_bad_return(f, "return { allow = true, dsn = { 'a' } }", "allow{}: unknown field 'dsn'");
	expect_bad_return(f, "return allow{ cn = 'a', dsn = { 'a' } }", "policy.lua:2: allow{}: unknown field 'dsn'");
	expect_bad_return(f, "local t = allow{ cn = 'a' }; t.dsn = 1; return t", "allow{}: unknown field 'dsn'");
	expect_bad_return(f, "return allow{ 'a' }", "fields must be named");
	expect_bad_return(f, "return allow()", "allow{}");
	expect_bad_return(f, "return allow{ dns = { 'a', 5 } }", "dns[2] must be a string");
	expect_bad_return(f, "return allow{ dns = 'a.example.com' }", "dns must be a list of strings");
	expect_bad_return(f, "return allow{ ip = { 'a', x = 'b' } }", "plain list");
	expect_bad_return(f, "return allow{ email = { '' } }", "email[1] must be 1 to 255 bytes");
	expect_bad_return(f, "local t = {} for i = 1, 33 do t[i] = 'h' .. i end return allow{ dns = t }",
			  "dns has 33 entries; at most 32");
	expect_bad_return(f, "return allow{ cn = string.rep('c', 256) }", "cn is 256 bytes long; at most 255");
	expect_bad_return(f, "return allow{ profile = string.rep('p', 64) }", "profile is 64 bytes long");
	expect_bad_return(f, "return allow{ cn = 7 }", "cn must be a string, not number");
	expect_bad_return(f, "return allow{ cn = 'a', validity = -5 }", "validity must be a positive whole number");
	expect_bad_return(f, "return allow{ cn = 'a', validity = 1.5 }", "validity must be a positive whole number");
	expect_bad_return(f, "return allow{ cn = 'a', validity = '30d' }", "validity must be");
	expect_bad_return(f, "return allow{ cn = 'a\\0b' }", "NUL");
	expect_bad_return(f, "return deny(123)", "deny(reason): reason must be a string");
	expect_bad_return(f, "return deny(string.rep('r', 300))", "at most 255");
	expect_bad_return(f, "return { allow = false }", "a denial needs a reason");
	expect_bad_return(f, "return { allow = false, reason = 'x', cn = 'y' }", "deny(): unknown field 'cn'");
}

/* Well over a hundred thousand calls on one state: no leak, no drift. */
static void test_many_calls(void **state)
{
	struct policy *p = load_default(*state);
	struct policy_request r = sample_request();
	struct policy_decision d;
	char err[512] = "";

	for (int i = 0; i < 20000; i++) {
		if (policy_enroll(p, &r, &d, err, sizeof err) != 0)
			fail_msg("call %d: %s", i, err);
		assert_true(d.allow);
		policy_decision_clear(&d);
	}
	policy_free(p);
	policy_free(NULL);
	policy_decision_clear(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_default_token_allows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_no_token_denies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_renew_allows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_shape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_helpers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keygen_and_csrattrs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syntax_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_enroll, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_time_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_binary_chunk_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sandbox_globals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sandbox_calls_fail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_metamethod_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_instruction_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_runtime_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_xpcall, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_returns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_calls, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
