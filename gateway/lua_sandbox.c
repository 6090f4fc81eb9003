/*
 * lua_sandbox: Lua states with a memory cap, an instruction cap and a short
 * list of libraries. See lua_sandbox.h for the contract.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fg_log.h"
#include "fg_util.h"
#include "lua_sandbox.h"

/* Extra bytes the message handler may use above the cap, so that a policy
 * that fails right at its memory limit still gets a "file:line:" message. */
#define SANDBOX_HANDLER_SLACK (16 * 1024)

struct sandbox {
	lua_State *L;
	enum sandbox_libs libs;
	size_t used;             /* bytes the state holds */
	size_t cap;              /* refuse growth past this */
	int handling;            /* message handler running: allow the slack */
	int mem_hit;             /* an allocation was refused during this call */
	uint64_t instructions;   /* per-call cap */
	uint64_t rounds_left;    /* hook rounds left before the cap trips */
	int hook_step;           /* instructions per hook round */
	int exceeded;            /* the instruction cap tripped during this call */
	char limit_msg[256];     /* what to report when it did */
	const char *what;        /* "policy", "the config file" */
	const char *component;   /* fg_log component for print() */
	const char *request_id;  /* borrowed, for print() */
};

/* The sandbox behind a state: it is the allocator's userdata. */
static struct sandbox *sandbox_of(lua_State *L)
{
	void *ud = NULL;
	lua_getallocf(L, &ud);
	return ud;
}

/* lua_Alloc that counts bytes and refuses growth past the cap. Shrinking
 * and freeing always succeed. When ptr is NULL, osize carries a type tag,
 * not a size. A refused allocation makes Lua collect garbage and retry
 * once before it raises a memory error. */
static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct sandbox *sb = ud;
	void *np;

	if (ptr == NULL)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		sb->used -= osize;
		return NULL;
	}
	if (nsize > osize) {
		size_t grow = nsize - osize;
		size_t cap = sb->cap;
		if (sb->handling && cap <= SIZE_MAX - SANDBOX_HANDLER_SLACK)
			cap += SANDBOX_HANDLER_SLACK;
		if (grow > cap || sb->used > cap - grow) {
			sb->mem_hit = 1;
			return NULL;
		}
	}
	np = realloc(ptr, nsize);
	if (np == NULL)
		return NULL;
	sb->used = sb->used - osize + nsize;
	return np;
}

/* Count hook: runs every hook_step instructions. When the call's budget is
 * spent it records the message and raises it, and from then on fires on
 * every instruction, so code that catches the error with pcall fails again
 * at its very next instruction and the call unwinds. */
static void sandbox_hook(lua_State *L, lua_Debug *ar)
{
	struct sandbox *sb = sandbox_of(L);

	if (!sb->exceeded) {
		if (sb->rounds_left > 1) {
			sb->rounds_left--;
			return;
		}
		sb->exceeded = 1;
		if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
			snprintf(sb->limit_msg, sizeof sb->limit_msg,
				 "%s:%d: %s exceeded the instruction limit (%llu)", ar->short_src,
				 ar->currentline, sb->what, (unsigned long long)sb->instructions);
		else
			snprintf(sb->limit_msg, sizeof sb->limit_msg,
				 "%s exceeded the instruction limit (%llu)", sb->what,
				 (unsigned long long)sb->instructions);
		lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, 1);
	}
	lua_pushstring(L, sb->limit_msg);
	lua_error(L);
}

/* Start a fresh instruction budget for one call. The hook count is an int,
 * so large caps run as several rounds of at most INT_MAX instructions. */
static void sandbox_arm(struct sandbox *sb)
{
	uint64_t n = sb->instructions;

	sb->hook_step = n > INT_MAX ? INT_MAX : (int)n;
	sb->rounds_left = n / (uint64_t)sb->hook_step;
	sb->exceeded = 0;
	sb->mem_hit = 0;
	sb->handling = 0;
	lua_sethook(sb->L, sandbox_hook, LUA_MASKCOUNT, sb->hook_step);
}

/* Message handler for every sandbox_pcall: puts "file:line: " of the
 * innermost Lua frame in front of a message that has no position yet.
 * Light userdata (a C caller's own error marker) passes unchanged. Other
 * non-string objects become a description; their __tostring is not called,
 * so no policy code runs inside the handler. */
static int sandbox_msgh(lua_State *L)
{
	struct sandbox *sb = sandbox_of(L);
	const char *msg;
	lua_Debug ar;

	sb->handling = 1;
	switch (lua_type(L, 1)) {
	case LUA_TLIGHTUSERDATA:
		return 1;
	case LUA_TSTRING:
	case LUA_TNUMBER:
		msg = lua_tostring(L, 1);
		break;
	default:
		msg = lua_pushfstring(L, "error object is a %s value", luaL_typename(L, 1));
		break;
	}
	for (int level = 1; lua_getstack(L, level, &ar); level++) {
		size_t n;
		if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
			continue;
		n = strlen(ar.short_src);
		if (strncmp(msg, ar.short_src, n) == 0 && msg[n] == ':')
			break;
		lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, msg);
		return 1;
	}
	return 1;   /* the message as it is, on top */
}

/* print(...) for policies: one debug log line, arguments separated by tabs. */
static int sandbox_print(lua_State *L)
{
	struct sandbox *sb = sandbox_of(L);
	int n = lua_gettop(L);
	luaL_Buffer b;

	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		if (i > 1)
			luaL_addchar(&b, '\t');
		luaL_tolstring(L, i, NULL);
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	fg_debug(sb->component, sb->request_id, "print: %s", lua_tostring(L, -1));
	return 0;
}

/* setmetatable without __gc: finalizers would run policy code during
 * garbage collection, outside any call and so outside the instruction cap
 * (lua_close at a reload, or a collection after a memory error). */
static int sandbox_setmetatable(lua_State *L)
{
	int t = lua_type(L, 2);

	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
	if (t == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return luaL_error(L, "setmetatable: __gc metamethods are not available here");
		lua_pop(L, 1);
	}
	if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
		return luaL_error(L, "cannot change a protected metatable");
	lua_settop(L, 2);
	lua_setmetatable(L, 1);
	return 1;
}

/* xpcall(f, msgh, ...) that calls msgh after the stack has unwound, like
 * pcall followed by msgh(err). Lua's own xpcall runs the handler while
 * the error is being raised; when the error comes from the count hook,
 * hooks are still disabled at that moment, so a looping handler would run
 * with no instruction cap at all. Without the debug library a handler
 * cannot inspect the failed frames anyway, so nothing is lost. Returns
 * true and f's results, or false and the handler's result. */
static int sandbox_xpcall(lua_State *L)
{
	int n = lua_gettop(L);

	luaL_checkany(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 1);
	for (int i = 3; i <= n; i++)
		lua_pushvalue(L, i);
	if (lua_pcall(L, n - 2, LUA_MULTRET, 0) == LUA_OK) {
		lua_pushboolean(L, 1);
		lua_insert(L, n + 1);
		return lua_gettop(L) - n;
	}
	lua_pushvalue(L, 2);
	lua_insert(L, -2);
	lua_pcall(L, 1, 1, 0);     /* a failing handler's error is the result */
	lua_pushboolean(L, 0);
	lua_insert(L, -2);
	return 2;
}

/* Open the chosen libraries and take out what a sandbox must not offer.
 * Runs protected, with the memory cap lifted. */
static int sandbox_setup(lua_State *L)
{
	static const luaL_Reg libs[] = {
		{ LUA_GNAME, luaopen_base },
		{ LUA_STRLIBNAME, luaopen_string },
		{ LUA_TABLIBNAME, luaopen_table },
		{ LUA_MATHLIBNAME, luaopen_math },
		{ LUA_UTF8LIBNAME, luaopen_utf8 },
	};
	static const char *const removed[] = {
		"load", "loadstring", "dofile", "loadfile", "require", "collectgarbage", "warn",
	};
	struct sandbox *sb = lua_touserdata(L, 1);

	if (sb->libs == SANDBOX_LIBS_NONE)
		return 0;
	for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
		luaL_requiref(L, libs[i].name, libs[i].func, 1);
		lua_pop(L, 1);
	}
	for (size_t i = 0; i < sizeof removed / sizeof removed[0]; i++) {
		lua_pushnil(L);
		lua_setglobal(L, removed[i]);
	}
	lua_getglobal(L, LUA_STRLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
	lua_pushcfunction(L, sandbox_print);
	lua_setglobal(L, "print");
	lua_pushcfunction(L, sandbox_setmetatable);
	lua_setglobal(L, "setmetatable");
	lua_pushcfunction(L, sandbox_xpcall);
	lua_setglobal(L, "xpcall");
	return 0;
}

/* Last resort: an error outside any protected call. Every entry point here
 * is protected, so reaching this is a bug; log it before Lua aborts. */
static int sandbox_panic(lua_State *L)
{
	const char *msg = lua_tostring(L, -1);
	fg_err("lua", NULL, "unprotected Lua error: %s", msg ? msg : "(not a string)");
	return 0;
}

struct sandbox *sandbox_new(size_t memory, uint64_t instructions, enum sandbox_libs libs,
			    const char *what, const char *component, char *err, size_t errlen)
{
	struct sandbox *sb = NULL, *ret = NULL;

	if (memory == 0 || instructions == 0 || libs >= SANDBOX_LIBS_MAX) {
		fg_seterr(err, errlen, "Lua sandbox: memory and instruction limits must be positive");
		goto out;
	}
	sb = calloc(1, sizeof *sb);
	if (sb == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	sb->libs = libs;
	sb->cap = SIZE_MAX;
	sb->instructions = instructions;
	sb->what = what ? what : "Lua code";
	sb->component = component ? component : "lua";
	sb->L = lua_newstate(sandbox_alloc, sb);
	if (sb->L == NULL) {
		fg_seterr(err, errlen, "out of memory creating a Lua state");
		goto out;
	}
	lua_atpanic(sb->L, sandbox_panic);
	lua_pushcfunction(sb->L, sandbox_setup);
	lua_pushlightuserdata(sb->L, sb);
	if (lua_pcall(sb->L, 1, 0, 0) != LUA_OK) {
		fg_seterr(err, errlen, "cannot open the Lua libraries: %s",
			  lua_type(sb->L, -1) == LUA_TSTRING ? lua_tostring(sb->L, -1) : "out of memory");
		goto out;
	}
	lua_gc(sb->L, LUA_GCCOLLECT, 0);
	if (sb->used >= memory) {
		fg_seterr(err, errlen,
			  "the Lua memory limit (%zu bytes) is below the %zu bytes the libraries need; raise it",
			  memory, sb->used);
		goto out;
	}
	sb->cap = memory;
	ret = sb;
	sb = NULL;
out:
	sandbox_free(sb);
	return ret;
}

void sandbox_free(struct sandbox *sb)
{
	if (sb == NULL)
		return;
	if (sb->L != NULL) {
		sb->cap = SIZE_MAX;
		lua_close(sb->L);
	}
	free(sb);
}

lua_State *sandbox_lua(struct sandbox *sb)
{
	return sb->L;
}

size_t sandbox_memory_used(const struct sandbox *sb)
{
	return sb->used;
}

size_t sandbox_memory_limit(const struct sandbox *sb)
{
	return sb->cap;
}

void sandbox_set_memory_limit(struct sandbox *sb, size_t bytes)
{
	sb->cap = bytes;
}

void sandbox_set_request_id(struct sandbox *sb, const char *request_id)
{
	sb->request_id = request_id;
}

const char *sandbox_request_id(const struct sandbox *sb)
{
	return sb->request_id;
}

/* Compile text as a chunk. Binary chunks are refused by mode "t"; the
 * message says so in words rather than Lua's terse one. */
int sandbox_load(struct sandbox *sb, const char *chunkname, const char *text, size_t len,
		 char *err, size_t errlen)
{
	const char *name = chunkname[0] == '@' || chunkname[0] == '=' ? chunkname + 1 : chunkname;
	int st;

	if (len >= sizeof LUA_SIGNATURE - 1 &&
	    memcmp(text, LUA_SIGNATURE, sizeof LUA_SIGNATURE - 1) == 0) {
		fg_seterr(err, errlen,
			  "%s: this is a precompiled (binary) Lua chunk; only Lua source text is accepted",
			  name);
		return -1;
	}
	sb->mem_hit = 0;
	st = luaL_loadbufferx(sb->L, text, len, chunkname, "t");
	if (st == LUA_OK)
		return 0;
	if (st == LUA_ERRMEM)
		fg_seterr(err, errlen, "%s: %s exceeded its memory limit (%zu bytes) while compiling",
			  name, sb->what, sb->cap);
	else if (lua_type(sb->L, -1) == LUA_TSTRING)
		fg_seterr(err, errlen, "%s", lua_tostring(sb->L, -1));
	else
		fg_seterr(err, errlen, "%s: cannot compile", name);
	lua_pop(sb->L, 1);
	if (st == LUA_ERRMEM)
		lua_gc(sb->L, LUA_GCCOLLECT, 0);
	return -1;
}

/* lua_pcall under both caps. The limits take precedence over whatever
 * message the code managed to raise: once the instruction cap tripped the
 * call failed, even if the code swallowed the error and returned. */
int sandbox_pcall(struct sandbox *sb, int nargs, int nresults, char *err, size_t errlen)
{
	lua_State *L = sb->L;
	int base = lua_gettop(L) - nargs;   /* the function's index */
	int st, memerr;
	const char *msg;

	lua_pushcfunction(L, sandbox_msgh);
	lua_insert(L, base);
	sandbox_arm(sb);
	st = lua_pcall(L, nargs, nresults, base);
	lua_sethook(L, NULL, 0, 0);
	sb->handling = 0;
	if (st == LUA_OK && !sb->exceeded) {
		lua_remove(L, base);
		return 0;
	}
	msg = st != LUA_OK && lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
	memerr = st == LUA_ERRMEM ||
		 (sb->mem_hit && msg != NULL && strstr(msg, "not enough memory") != NULL);
	if (sb->exceeded)
		fg_seterr(err, errlen, "%s", sb->limit_msg);
	else if (memerr)
		fg_seterr(err, errlen, "%s exceeded its memory limit (%zu bytes)", sb->what, sb->cap);
	else if (msg != NULL)
		fg_seterr(err, errlen, "%s", msg);
	else if (st == LUA_ERRERR)
		fg_seterr(err, errlen, "%s failed, and so did its error handler", sb->what);
	else
		fg_seterr(err, errlen, "%s failed with an error that is not a string", sb->what);
	lua_settop(L, base - 1);
	if (memerr)
		lua_gc(L, LUA_GCCOLLECT, 0);
	return -1;
}
