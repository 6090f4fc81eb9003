/*
 * policy_reload: hot reload of the policy in fleetgated.
 *
 * The main thread watches the policy's directory with inotify (so an
 * editor that writes a temp file and renames it over the policy is seen as
 * well as a plain write): CLOSE_WRITE or MOVED_TO of the policy's base
 * name arms a short debounce, after which the file is read once and
 * validated (policy_validate: compile in the sandbox with the gateway's
 * limits, entry points, and the fixtures in <policy>.tests.json when that
 * file exists). SIGHUP does the same at once.
 *
 * A policy that passes becomes the current source text and the generation
 * goes up by one. Workers compare the generation between requests and,
 * when it moved, compile their own Lua state from that text (never from a
 * re-read of the file, which may have changed again): a request in flight
 * finishes on the state it started with, and no worker ever runs an
 * unvalidated policy. A refused policy gets one log line with the reason
 * (file:line for Lua errors) and the previous generation keeps serving.
 * Every attempt is counted with stats_policy_reload.
 *
 * Generation 0 is the policy the workers compiled at start-up.
 */
#ifndef FG_POLICY_RELOAD_H
#define FG_POLICY_RELOAD_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"

struct policy_reload;

/* Watch path (the gateway's policy file; lim are its limits, copied).
 * When inotify is not available the watcher logs a warning and only
 * SIGHUP reloads. NULL with err only when out of memory. */
struct policy_reload *policy_reload_new(const char *path, const struct policy_limits *lim,
					char *err, size_t errlen);
void policy_reload_free(struct policy_reload *pr);
/* Write an audit record ("policy.reload" or "policy.reload_refused") for
 * every reload attempt, on a store connection of its own. 0, or -1. */
int policy_reload_audit_to(struct policy_reload *pr, const char *store_path, char *err,
			   size_t errlen);

/* The inotify descriptor to poll for input, or -1 when there is none. */
int policy_reload_fd(const struct policy_reload *pr);

/* Read the pending inotify events; a change to the policy arms (or pushes
 * back) the debounce timer. */
void policy_reload_on_event(struct policy_reload *pr);

/* Milliseconds until a debounced reload is due (0: now), or -1 when none
 * is pending: the poll timeout of the main loop. */
long policy_reload_timeout_ms(const struct policy_reload *pr);

/* Run the debounced reload if it is due. */
void policy_reload_tick(struct policy_reload *pr);

/* Read, validate and publish the policy now (why goes to the log:
 * "file changed", "SIGHUP"). 0 when the new policy was published, -1 when
 * it was refused (logged; the old one serves on). */
int policy_reload_now(struct policy_reload *pr, const char *why);

/* The current generation (any thread; lock-free). */
uint64_t policy_reload_generation(const struct policy_reload *pr);

/* Compile the current validated source in a new Lua state for the calling
 * worker. *gen gets the generation compiled. A new policy the caller frees,
 * or NULL with err (*gen is set even then, so the worker does not retry the
 * same text on every request). Any thread. */
struct policy *policy_reload_compile(struct policy_reload *pr, uint64_t *gen, char *err,
				     size_t errlen);

#endif
