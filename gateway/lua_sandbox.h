/*
 * lua_sandbox: a Lua 5.4 state with a memory cap, an instruction cap and a
 * chosen, small set of libraries. The policy engine and the config reader
 * both run untrusted-ish Lua through it.
 *
 *  - Memory: a lua_Alloc counts every byte the state holds and refuses
 *    growth past the cap. Lua then runs an emergency collection and, if
 *    that is not enough, raises a memory error; sandbox_pcall reports it
 *    as "<what> exceeded its memory limit (N bytes)" and collects garbage,
 *    so the state stays usable.
 *  - Instructions: a count hook raises "<what> exceeded the instruction
 *    limit (N)" once a call has run N VM instructions. The count restarts
 *    for every sandbox_pcall. Once tripped, the hook fires on every
 *    instruction, so a policy cannot catch the error with pcall and go on.
 *  - Libraries: SANDBOX_LIBS_NONE opens nothing (the config file: plain
 *    data). SANDBOX_LIBS_POLICY opens base, string, table, math and utf8
 *    only (never luaL_openlibs), then removes load, loadstring, dofile,
 *    loadfile, require, collectgarbage, warn and string.dump, and replaces
 *    print with a function that logs at debug level.
 *  - Chunks load as text only (mode "t"); binary chunks are refused.
 *
 * Every call into Lua goes through sandbox_pcall (lua_pcall with a message
 * handler that puts "file:line:" in front of the message when it has none).
 * Callers that build tables in C do it inside a C function run through
 * sandbox_pcall, because a state made with lua_newstate has no panic
 * handler: a memory error outside a protected call would abort.
 *
 * Lua's xpcall is replaced by one that runs the handler after unwinding
 * (Lua's runs it while hooks are off when the error came from the count
 * hook), and setmetatable refuses __gc (finalizers would run outside any
 * capped call).
 *
 * XXX: the instruction cap counts VM instructions only. A C library call
 * is one instruction however long it runs; memory bounds most of them, but
 * string.find/match/gsub with a pathological pattern (many ".-" over a
 * long subject) can run for a very long time. A per-call watchdog, or a
 * matcher with a step budget, is owed.
 *
 * One sandbox belongs to one thread at a time.
 */
#ifndef FG_LUA_SANDBOX_H
#define FG_LUA_SANDBOX_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>

struct sandbox;

enum sandbox_libs {
	SANDBOX_LIBS_NONE,      /* no library at all: an empty global table */
	SANDBOX_LIBS_POLICY,    /* base (trimmed), string (no dump), table, math, utf8 */
	SANDBOX_LIBS_MAX
};

/* A new state. memory is the heap cap in bytes, instructions the per-call
 * VM instruction cap (both > 0). what names the code in error messages
 * ("policy", "the config file"); component is the fg_log component for
 * print(). Both strings must outlive the sandbox. NULL with err when the
 * state cannot be made or the libraries alone exceed the memory cap. */
struct sandbox *sandbox_new(size_t memory, uint64_t instructions, enum sandbox_libs libs,
			    const char *what, const char *component, char *err, size_t errlen);
void sandbox_free(struct sandbox *sb);

/* The Lua state (borrowed; valid until sandbox_free). */
lua_State *sandbox_lua(struct sandbox *sb);

/* Bytes the state holds now, and the cap. sandbox_set_memory_limit may
 * raise the cap for trusted setup work and lower it again afterwards. */
size_t sandbox_memory_used(const struct sandbox *sb);
size_t sandbox_memory_limit(const struct sandbox *sb);
void sandbox_set_memory_limit(struct sandbox *sb, size_t bytes);

/* Request id put on log lines from print() (borrowed; NULL for none). */
void sandbox_set_request_id(struct sandbox *sb, const char *request_id);
const char *sandbox_request_id(const struct sandbox *sb);

/* Compile text (never binary) as chunk name (e.g. "@policy.lua") and push
 * the resulting function. 0, or -1 with err ("policy.lua:3: ...") and
 * nothing pushed. */
int sandbox_load(struct sandbox *sb, const char *chunkname, const char *text, size_t len,
		 char *err, size_t errlen);

/* Call the function below nargs arguments on the stack, like lua_pcall,
 * under the instruction cap (reset for this call) and the memory cap.
 * 0 with nresults values pushed, or -1 with err and the function and
 * arguments popped. An error object that is not a string (for example a
 * light userdata a C caller raised on purpose) gives a generic message;
 * such callers keep their own error text. */
int sandbox_pcall(struct sandbox *sb, int nargs, int nresults, char *err, size_t errlen);

#endif
