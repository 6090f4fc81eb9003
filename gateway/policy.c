/*
 * policy: enrollment decisions made by a Lua policy in a sandbox.
 *
 * policy_new compiles the file once; policy_enroll builds the req table,
 * calls enroll(req) under the instruction and memory caps and turns the
 * returned table into a struct policy_decision, refusing anything it does
 * not understand. Nothing is compiled per call and the state is reused;
 * the enroll function stays at stack index 1 of the state for its life.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>

#include "fg_log.h"
#include "fg_util.h"
#include "lua_sandbox.h"
#include "policy.h"

#define POLICY_MAX_FILE (1024 * 1024)       /* bytes of policy source */
#define POLICY_NAME_MAX 255                 /* bytes of one dns/ip/email entry */
#define POLICY_DEFAULT_MEMORY (4u * 1024 * 1024)
#define POLICY_DEFAULT_INSTRUCTIONS 1000000u

struct policy {
	struct sandbox *sb;
	char name[64];          /* file name for messages, e.g. "policy.lua" */
};

/* State of one policy_enroll while it runs inside the protected call. */
struct enroll_ctx {
	struct policy *p;
	const struct policy_request *req;
	struct policy_decision *out;
	char *err;
	size_t errlen;
	int rc;                 /* -1: the result was refused, err says why */
};

static const char *const allow_fields[] = {
	"allow", "profile", "backend", "cn", "dns", "ip", "email", "validity", "challenge",
	"acme_challenge", "keygen", "anchors",
};
#define ALLOW_FIELDS_TEXT "profile, backend, cn, dns, ip, email, validity, challenge, acme_challenge, keygen, anchors"

static int allow_field_known(const char *k)
{
	for (size_t i = 0; i < sizeof allow_fields / sizeof allow_fields[0]; i++)
		if (strcmp(k, allow_fields[i]) == 0)
			return 1;
	return 0;
}

/* ---- helpers offered to the policy ---- */

/* allow{...}: marks the table as an allow decision and returns it. Field
 * names are checked here so that a typo is reported at the policy line
 * that made it; values are checked when the decision is read. */
static int h_allow(lua_State *L)
{
	if (lua_type(L, 1) != LUA_TTABLE)
		return luaL_error(L, "allow{}: give the decision's fields in a table, e.g. allow{ cn = name }");
	lua_settop(L, 1);
	lua_pushnil(L);
	while (lua_next(L, 1) != 0) {
		if (lua_type(L, -2) != LUA_TSTRING)
			return luaL_error(L, "allow{}: fields must be named (cn = ..., dns = {...}); found a %s key",
					  luaL_typename(L, -2));
		if (!allow_field_known(lua_tostring(L, -2)))
			return luaL_error(L, "allow{}: unknown field '%s'; valid fields are " ALLOW_FIELDS_TEXT,
					  lua_tostring(L, -2));
		lua_pop(L, 1);
	}
	lua_pushboolean(L, 1);
	lua_setfield(L, 1, "allow");
	return 1;
}

/* deny(reason): a deny decision carrying the reason for the device and
 * the audit log. */
static int h_deny(lua_State *L)
{
	struct policy_decision *d = NULL;
	size_t len;

	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L, "deny(reason): reason must be a string saying why, e.g. deny(\"no token\")");
	lua_tolstring(L, 1, &len);
	if (len >= sizeof d->reason)
		return luaL_error(L, "deny(reason): reason is %d bytes; at most %d are allowed", (int)len,
				  (int)sizeof d->reason - 1);
	lua_createtable(L, 0, 2);
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "allow");
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "reason");
	return 1;
}

/* n * mult for fleet.days/fleet.hours: an integer when the result is whole. */
static int scale_seconds(lua_State *L, lua_Integer mult)
{
	luaL_checktype(L, 1, LUA_TNUMBER);
	if (lua_isinteger(L, 1)) {
		lua_Integer n = lua_tointeger(L, 1);
		if (n > LUA_MAXINTEGER / mult || n < LUA_MININTEGER / mult)
			return luaL_error(L, "duration out of range");
		lua_pushinteger(L, n * mult);
	} else {
		lua_Number v = lua_tonumber(L, 1) * (lua_Number)mult;
		lua_Integer i;
		if (lua_numbertointeger(v, &i) && (lua_Number)i == v)
			lua_pushinteger(L, i);
		else
			lua_pushnumber(L, v);
	}
	return 1;
}

static int h_days(lua_State *L)
{
	return scale_seconds(L, 86400);
}

static int h_hours(lua_State *L)
{
	return scale_seconds(L, 3600);
}

/* fleet.has_suffix(s, suffix): true when s ends with suffix (bytes, case
 * sensitive: lower-case both with string.lower for DNS names). */
static int h_has_suffix(lua_State *L)
{
	size_t n, m;
	const char *s = luaL_checklstring(L, 1, &n);
	const char *suf = luaL_checklstring(L, 2, &m);

	lua_pushboolean(L, m <= n && memcmp(s + n - m, suf, m) == 0);
	return 1;
}

/* fleet.log(msg): one info line tagged with the request id. */
static int h_log(lua_State *L)
{
	struct policy *p = lua_touserdata(L, lua_upvalueindex(1));
	const char *msg = luaL_checkstring(L, 1);

	fg_info("policy", sandbox_request_id(p->sb), "%s: %s", p->name, msg);
	return 0;
}

/* Put allow, deny and fleet in the globals; runs protected, before the
 * policy chunk, so the chunk may use them at load time too. */
static int install_helpers(lua_State *L)
{
	static const luaL_Reg fleet[] = {
		{ "days", h_days },
		{ "hours", h_hours },
		{ "has_suffix", h_has_suffix },
		{ "log", h_log },
		{ NULL, NULL },
	};

	lua_pushcfunction(L, h_allow);
	lua_setglobal(L, "allow");
	lua_pushcfunction(L, h_deny);
	lua_setglobal(L, "deny");
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, 1);            /* the struct policy, as upvalue */
	luaL_setfuncs(L, fleet, 1);
	lua_setglobal(L, "fleet");
	return 0;
}

/* Pushes the global enroll (protected: the lookup may allocate). */
static int get_enroll(lua_State *L)
{
	lua_getglobal(L, "enroll");
	return 1;
}

/* ---- req ---- */

/* t[k] = v for a non-empty v; absent otherwise, so policies test for nil. */
static void set_str(lua_State *L, const char *k, const char *v)
{
	if (v != NULL && v[0] != '\0') {
		lua_pushstring(L, v);
		lua_setfield(L, -2, k);
	}
}

static void set_bool(lua_State *L, const char *k, int v)
{
	lua_pushboolean(L, v);
	lua_setfield(L, -2, k);
}

/* t[k] = a table of the string members of the JSON object text json
 * (empty when json is NULL or unreadable: the gateway wrote it, and a
 * policy indexing req.device.attrs.x must not fail on a missing table).
 * XXX: a Lua memory error while filling the table longjmps past the
 * json_decref (a few hundred bytes leaked, only when the cap is hit
 * here, before the policy ran at all). */
static void set_string_table(lua_State *L, const char *k, const char *json)
{
	json_t *o = json ? json_loads(json, 0, NULL) : NULL;
	const char *name;
	json_t *v;
	lua_createtable(L, 0, json_is_object(o) ? (int)json_object_size(o) : 0);
	if (json_is_object(o))
		json_object_foreach(o, name, v) {
			if (json_is_string(v)) {
				lua_pushstring(L, json_string_value(v));
				lua_setfield(L, -2, name);
			}
		}
	json_decref(o);
	lua_setfield(L, -2, k);
}

/* Build the req table described in policy.h on top of the stack. Tables
 * are created at their final size so that no rehash happens per call. */
static void push_request(lua_State *L, const struct policy_request *r)
{
	const struct policy_facts *f = &r->facts;
	int n = 0;

	lua_createtable(L, 0, 9);
	set_str(L, "protocol", r->protocol ? r->protocol : "zmq");
	set_str(L, "request_id", r->request_id);
	set_str(L, "slot", r->slot);
	set_str(L, "profile", r->profile);
	set_bool(L, "renew", r->renew);
	set_bool(L, "new_device", r->new_device);

	lua_createtable(L, 0, 5);
	set_str(L, "id", r->device_id);
	set_str(L, "group", r->device_group);
	set_str(L, "hostname", r->device_hostname);
	set_str(L, "serial", r->device_serial);
	set_string_table(L, "attrs", r->device_attrs_json);
	lua_setfield(L, -2, "device");

	if (r->token_group != NULL) {
		lua_createtable(L, 0, 2);
		set_str(L, "group", r->token_group);
		set_string_table(L, "bound", r->token_bound_json);
		lua_setfield(L, -2, "token");
	}

	lua_createtable(L, 0, 12);
	set_str(L, "hostname", f->hostname);
	set_str(L, "machine_id", f->machine_id);
	set_str(L, "os_id", f->os_id);
	set_str(L, "os_version", f->os_version);
	set_str(L, "os_pretty_name", f->os_pretty_name);
	set_str(L, "kernel_release", f->kernel_release);
	set_str(L, "arch", f->arch);
	set_str(L, "dmi_product_uuid", f->dmi_product_uuid);
	set_str(L, "dmi_product_serial", f->dmi_product_serial);
	set_str(L, "agent_version", f->agent_version);
	if (f->secure_boot >= 0)
		set_bool(L, "secure_boot", f->secure_boot > 0);
	set_bool(L, "tpm_present", f->tpm_present != 0);
	lua_setfield(L, -2, "facts");

	lua_createtable(L, 0, 5);
	set_str(L, "cn", r->csr_cn);
	lua_createtable(L, (int)(r->csr_ndns < 64 ? r->csr_ndns : 64), 0);
	for (size_t i = 0; i < r->csr_ndns; i++) {
		if (r->csr_dns[i] == NULL)
			continue;
		lua_pushstring(L, r->csr_dns[i]);
		lua_rawseti(L, -2, ++n);
	}
	lua_setfield(L, -2, "dns");
	set_str(L, "key_type", r->csr_key_type);
	set_str(L, "curve", r->csr_curve);
	if (r->csr_key_bits > 0) {
		lua_pushinteger(L, r->csr_key_bits);
		lua_setfield(L, -2, "key_bits");
	}
	lua_setfield(L, -2, "csr");

	/* backend_csrattrs["est-corp"] = { key_type = "ec", oids = { ... } } */
	lua_createtable(L, 0, (int)(r->nbackend_csrattrs < 64 ? r->nbackend_csrattrs : 64));
	for (size_t i = 0; i < r->nbackend_csrattrs; i++) {
		const struct policy_csrattrs *a = &r->backend_csrattrs[i];
		lua_createtable(L, 0, 2);
		set_str(L, "key_type", a->key_type);
		lua_createtable(L, (int)(a->noids < 64 ? a->noids : 64), 0);
		for (size_t j = 0; j < a->noids; j++) {
			lua_pushstring(L, a->oids[j]);
			lua_rawseti(L, -2, (lua_Integer)j + 1);
		}
		lua_setfield(L, -2, "oids");
		lua_setfield(L, -2, a->backend);
	}
	lua_setfield(L, -2, "backend_csrattrs");
}

/* ---- decision ---- */

static const char *describe(lua_State *L, int idx)
{
	switch (lua_type(L, idx)) {
	case LUA_TNONE:
	case LUA_TNIL:
		return "nothing";
	case LUA_TNUMBER:
		return "a number";
	case LUA_TSTRING:
		return "a string";
	case LUA_TBOOLEAN:
		return "a boolean";
	case LUA_TFUNCTION:
		return "a function";
	default:
		return "an unexpected value";
	}
}

/* Copy the string at idx into buf (size bytes): it must be a string with
 * no NUL that fits; longer is an error, never a silent truncation. */
static int take_str(lua_State *L, int idx, const char *what, const char *field, char *buf,
		    size_t size, struct enroll_ctx *c)
{
	size_t len;
	const char *s;

	if (lua_type(L, idx) != LUA_TSTRING) {
		fg_seterr(c->err, c->errlen, "%s: %s: %s must be a string, not %s", c->p->name, what,
			  field, luaL_typename(L, idx));
		return -1;
	}
	s = lua_tolstring(L, idx, &len);
	if (len >= size) {
		fg_seterr(c->err, c->errlen, "%s: %s: %s is %zu bytes long; at most %zu are allowed",
			  c->p->name, what, field, len, size - 1);
		return -1;
	}
	if (strlen(s) != len) {
		fg_seterr(c->err, c->errlen, "%s: %s: %s contains a NUL byte", c->p->name, what, field);
		return -1;
	}
	memcpy(buf, s, len + 1);
	return 0;
}

/* A list of names (dns, ip, email) at idx: an array of 1..POLICY_MAX_NAMES
 * non-empty strings and nothing else. Copies go to names[], count to *n. */
static int take_names(lua_State *L, int idx, const char *field, char **names, size_t *n,
		      struct enroll_ctx *c)
{
	const char *name = c->p->name;
	lua_Unsigned len;
	size_t keys = 0;

	if (lua_type(L, idx) != LUA_TTABLE) {
		fg_seterr(c->err, c->errlen, "%s: allow{}: %s must be a list of strings, e.g. %s = { name }, not %s",
			  name, field, field, luaL_typename(L, idx));
		return -1;
	}
	len = lua_rawlen(L, idx);
	if (len > POLICY_MAX_NAMES) {
		fg_seterr(c->err, c->errlen, "%s: allow{}: %s has %llu entries; at most %d are allowed",
			  name, field, (unsigned long long)len, POLICY_MAX_NAMES);
		return -1;
	}
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		keys++;
		lua_pop(L, 1);
	}
	if (keys != len) {
		fg_seterr(c->err, c->errlen, "%s: allow{}: %s must be a plain list { \"a\", \"b\" } without named keys or holes",
			  name, field);
		return -1;
	}
	for (lua_Unsigned i = 1; i <= len; i++) {
		size_t sl;
		const char *s;
		if (lua_rawgeti(L, idx, (lua_Integer)i) != LUA_TSTRING) {
			fg_seterr(c->err, c->errlen, "%s: allow{}: %s[%llu] must be a string, not %s", name,
				  field, (unsigned long long)i, luaL_typename(L, -1));
			return -1;
		}
		s = lua_tolstring(L, -1, &sl);
		if (sl == 0 || sl > POLICY_NAME_MAX || strlen(s) != sl) {
			fg_seterr(c->err, c->errlen, "%s: allow{}: %s[%llu] must be 1 to %d bytes without NUL",
				  name, field, (unsigned long long)i, POLICY_NAME_MAX);
			return -1;
		}
		names[*n] = strdup(s);
		if (names[*n] == NULL) {
			fg_seterr(c->err, c->errlen, "out of memory");
			return -1;
		}
		(*n)++;
		lua_pop(L, 1);
	}
	return 0;
}

/* One field of an allow decision, value on top of the stack. */
static int take_allow_field(lua_State *L, const char *k, struct enroll_ctx *c)
{
	struct policy_decision *d = c->out;
	int v = lua_gettop(L);

	if (strcmp(k, "allow") == 0)
		return 0;
	if (strcmp(k, "profile") == 0)
		return take_str(L, v, "allow{}", "profile", d->profile, sizeof d->profile, c);
	if (strcmp(k, "backend") == 0)
		return take_str(L, v, "allow{}", "backend", d->backend, sizeof d->backend, c);
	if (strcmp(k, "cn") == 0)
		return take_str(L, v, "allow{}", "cn", d->cn, sizeof d->cn, c);
	if (strcmp(k, "challenge") == 0)
		return take_str(L, v, "allow{}", "challenge", d->challenge, sizeof d->challenge, c);
	if (strcmp(k, "acme_challenge") == 0)
		return take_str(L, v, "allow{}", "acme_challenge", d->acme_challenge,
				sizeof d->acme_challenge, c);
	if (strcmp(k, "anchors") == 0) {
		if (lua_type(L, v) != LUA_TBOOLEAN) {
			fg_seterr(c->err, c->errlen, "%s: allow{}: anchors must be true or false, not %s",
				  c->p->name, luaL_typename(L, v));
			return -1;
		}
		d->anchors = lua_toboolean(L, v);
		return 0;
	}
	if (strcmp(k, "keygen") == 0) {
		if (take_str(L, v, "allow{}", "keygen", d->keygen, sizeof d->keygen, c) != 0)
			return -1;
		if (strcmp(d->keygen, "server") != 0 && strcmp(d->keygen, "device") != 0) {
			fg_seterr(c->err, c->errlen, "%s: allow{}: keygen must be \"server\" or \"device\", not '%s'",
				  c->p->name, d->keygen);
			return -1;
		}
		return 0;
	}
	if (strcmp(k, "dns") == 0)
		return take_names(L, v, "dns", d->dns, &d->ndns, c);
	if (strcmp(k, "ip") == 0)
		return take_names(L, v, "ip", d->ip, &d->nip, c);
	if (strcmp(k, "email") == 0)
		return take_names(L, v, "email", d->email, &d->nemail, c);
	if (strcmp(k, "validity") == 0) {
		int isint = 0;
		lua_Integer s = 0;
		if (lua_type(L, v) == LUA_TNUMBER)
			s = lua_tointegerx(L, v, &isint);
		if (!isint || s <= 0) {
			fg_seterr(c->err, c->errlen,
				  "%s: allow{}: validity must be a positive whole number of seconds, e.g. fleet.days(30)",
				  c->p->name);
			return -1;
		}
		d->validity = (int64_t)s;
		return 0;
	}
	fg_seterr(c->err, c->errlen, "%s: allow{}: unknown field '%s'; valid fields are " ALLOW_FIELDS_TEXT,
		  c->p->name, k);
	return -1;
}

/* Read the value enroll returned (at idx) into c->out, strictly: a table
 * with allow = true/false (as allow{} and deny() make), only known fields,
 * each of the right type and size. Raw access only, so no policy code
 * (metamethods) runs here. 0, or -1 with c->err. */
static int read_decision(lua_State *L, int idx, struct enroll_ctx *c)
{
	struct policy_decision *d = c->out;
	const char *name = c->p->name;
	int allow;

	if (lua_type(L, idx) != LUA_TTABLE) {
		fg_seterr(c->err, c->errlen, "%s: enroll(req) returned %s; it must return allow{...} or deny(reason)",
			  name, describe(L, idx));
		return -1;
	}
	lua_pushliteral(L, "allow");
	if (lua_rawget(L, idx) != LUA_TBOOLEAN) {
		fg_seterr(c->err, c->errlen,
			  "%s: enroll(req) returned a table that is not a decision (no allow = true/false); "
			  "return allow{...} or deny(reason)", name);
		return -1;
	}
	allow = lua_toboolean(L, -1);
	lua_pop(L, 1);
	d->allow = allow;

	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		const char *k;
		if (lua_type(L, -2) != LUA_TSTRING) {
			fg_seterr(c->err, c->errlen, "%s: %s: fields must be named; found a %s key", name,
				  allow ? "allow{}" : "deny()", luaL_typename(L, -2));
			return -1;
		}
		k = lua_tostring(L, -2);
		if (allow) {
			if (take_allow_field(L, k, c) != 0)
				return -1;
		} else if (strcmp(k, "reason") == 0) {
			if (take_str(L, lua_gettop(L), "deny()", "reason", d->reason, sizeof d->reason, c) != 0)
				return -1;
		} else if (strcmp(k, "allow") != 0) {
			fg_seterr(c->err, c->errlen, "%s: deny(): unknown field '%s'; a denial has only a reason",
				  name, k);
			return -1;
		}
		lua_pop(L, 1);
	}
	if (!allow && d->reason[0] == '\0') {
		fg_seterr(c->err, c->errlen, "%s: deny(): a denial needs a reason", name);
		return -1;
	}
	return 0;
}

/* The protected body of policy_enroll. Arguments: the context (light
 * userdata) and the enroll function. */
static int enroll_call(lua_State *L)
{
	struct enroll_ctx *c = lua_touserdata(L, 1);

	lua_settop(L, 2);
	push_request(L, c->req);
	lua_call(L, 1, 1);
	c->rc = read_decision(L, 2, c);
	return 0;
}

/* Put "policy.lua: " in front of a sandbox message that does not name
 * the file yet (a memory error has no position), so that every message
 * says which policy failed. */
static void name_err(const struct policy *p, char *err, size_t errlen)
{
	char tmp[1024];
	size_t n = strlen(p->name);

	if (err == NULL || errlen == 0 || (strncmp(err, p->name, n) == 0 && err[n] == ':'))
		return;
	fg_strlcpy(tmp, err, sizeof tmp);
	fg_seterr(err, errlen, "%s: %s", p->name, tmp);
}

/* ---- public ---- */

void policy_decision_clear(struct policy_decision *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->ndns; i++)
		free(d->dns[i]);
	for (size_t i = 0; i < d->nip; i++)
		free(d->ip[i]);
	for (size_t i = 0; i < d->nemail; i++)
		free(d->email[i]);
	memset(d, 0, sizeof *d);
}

/* Read the policy file and compile it (policy_new_text does the work). */
struct policy *policy_new(const char *path, const struct policy_limits *lim, char *err,
			  size_t errlen)
{
	struct policy *ret = NULL;
	char *text = NULL;
	size_t len = 0;
	const char *base = strrchr(path, '/');

	if (policy_read_source(path, &text, &len, err, errlen) != 0)
		return NULL;
	ret = policy_new_text(base ? base + 1 : path, text, len, lim, err, errlen);
	free(text);
	return ret;
}

int policy_read_source(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
	return fg_read_file(path, POLICY_MAX_FILE, text, len, err, errlen);
}

/* Pushes the global checkin (protected: the lookup may allocate). */
static int get_checkin(lua_State *L)
{
	lua_getglobal(L, "checkin");
	return 1;
}

/* Compile the text, define the helpers, run the chunk once and keep its
 * enroll function at stack index 1. Every step runs under the caps, so a
 * policy that loops or eats memory at load time is refused. checkin is
 * optional, but when the chunk defines it, it must be a function. */
struct policy *policy_new_text(const char *name, const char *text, size_t len,
			       const struct policy_limits *lim, char *err, size_t errlen)
{
	struct policy *p = NULL, *ret = NULL;
	char chunk[sizeof p->name + 1];
	size_t memory = lim && lim->memory ? lim->memory : POLICY_DEFAULT_MEMORY;
	uint64_t instructions = lim && lim->instructions ? lim->instructions : POLICY_DEFAULT_INSTRUCTIONS;
	lua_State *L;

	if (len > POLICY_MAX_FILE) {
		fg_seterr(err, errlen, "%s is %zu bytes; a policy may have at most %d; split out data or trim it",
			  name, len, POLICY_MAX_FILE);
		goto out;
	}
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	fg_strlcpy(p->name, name, sizeof p->name);
	p->sb = sandbox_new(memory, instructions, SANDBOX_LIBS_POLICY, "policy", "policy", err, errlen);
	if (p->sb == NULL)
		goto out;
	L = sandbox_lua(p->sb);

	lua_pushcfunction(L, install_helpers);
	lua_pushlightuserdata(L, p);
	snprintf(chunk, sizeof chunk, "@%s", p->name);
	if (sandbox_pcall(p->sb, 1, 0, err, errlen) != 0 ||
	    sandbox_load(p->sb, chunk, text, len, err, errlen) != 0 ||
	    sandbox_pcall(p->sb, 0, 0, err, errlen) != 0) {
		name_err(p, err, errlen);
		goto out;
	}
	lua_pushcfunction(L, get_checkin);
	if (sandbox_pcall(p->sb, 0, 1, err, errlen) != 0) {
		name_err(p, err, errlen);
		goto out;
	}
	if (lua_type(L, -1) != LUA_TNIL && lua_type(L, -1) != LUA_TFUNCTION) {
		fg_seterr(err, errlen, "%s: checkin is a %s value; define it as function checkin(dev) ... end "
			  "or leave it out", p->name, luaL_typename(L, -1));
		goto out;
	}
	lua_pop(L, 1);
	lua_pushcfunction(L, get_enroll);
	if (sandbox_pcall(p->sb, 0, 1, err, errlen) != 0) {
		name_err(p, err, errlen);
		goto out;
	}
	if (lua_type(L, -1) != LUA_TFUNCTION) {
		if (lua_type(L, -1) == LUA_TNIL)
			fg_seterr(err, errlen, "%s defines no enroll(req) function; "
				  "add one that returns allow{...} or deny(reason)", p->name);
		else
			fg_seterr(err, errlen, "%s defines no enroll(req) function (enroll is a %s value); "
				  "define it as function enroll(req) ... end returning allow{...} or deny(reason)",
				  p->name, luaL_typename(L, -1));
		goto out;
	}
	/* The stack was empty before get_enroll: enroll now sits at index 1. */
	lua_gc(L, LUA_GCCOLLECT, 0);
	ret = p;
	p = NULL;
out:
	policy_free(p);
	return ret;
}

const char *policy_name(const struct policy *p)
{
	return p->name;
}

void policy_free(struct policy *p)
{
	if (p == NULL)
		return;
	sandbox_free(p->sb);
	free(p);
}

/* Run enroll(req) once. *out is overwritten (the caller clears an earlier
 * decision first). On -1 *out is left cleared and the state is ready for
 * the next call. */
int policy_enroll(struct policy *p, const struct policy_request *req,
		  struct policy_decision *out, char *err, size_t errlen)
{
	lua_State *L = sandbox_lua(p->sb);
	struct enroll_ctx c = { p, req, out, err, errlen, 0 };
	int rc;

	memset(out, 0, sizeof *out);
	sandbox_set_request_id(p->sb, req->request_id);
	lua_settop(L, 1);
	lua_pushcfunction(L, enroll_call);
	lua_pushlightuserdata(L, &c);
	lua_pushvalue(L, 1);
	rc = sandbox_pcall(p->sb, 2, 0, err, errlen);
	if (rc != 0)
		name_err(p, err, errlen);
	else if (c.rc != 0)
		rc = -1;
	sandbox_set_request_id(p->sb, NULL);
	lua_settop(L, 1);
	if (rc != 0)
		policy_decision_clear(out);
	return rc;
}
