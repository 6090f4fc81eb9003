/*
 * hookproc: the agent's hook runner, a small process that runs the slots'
 * reload commands for the sandboxed agent.
 *
 * The agent confines itself (sandbox.c) before it talks to the network; a
 * reload command (systemctl reload nginx, a script) needs what the agent
 * no longer has: exec, D-Bus, other files. So before the sandbox applies,
 * the agent forks this runner, which keeps a copy of the configuration as
 * read at start and nothing else (the CURVE secret and the token are wiped
 * in it). The confined agent asks it over a socketpair to run the hook of
 * slot NAME; the runner looks NAME up in its own copy and runs that slot's
 * configured command (slot_run_hook: /bin/sh -c, FLEETGATE_* environment,
 * timeout). The command never comes from the agent, so a compromised agent
 * can at most run a configured hook at the wrong time. The runner exits
 * when the agent closes the socket.
 *
 * Messages (SOCK_SEQPACKET, one datagram each) carry a fixed header
 * { version, type, body length, id }; the length is checked against a cap
 * and against what arrived before the body is looked at.
 */
#ifndef FG_HOOKPROC_H
#define FG_HOOKPROC_H

#include <stddef.h>
#include <sys/types.h>

#include "agent_config.h"

struct hookproc;

/* Fork the runner with a copy of cfg. In the child, child_init(arg) runs
 * first (the agent wipes its secrets there), then the runner's loop; the
 * child never returns. NULL with err when the socketpair or fork fails.
 * Call before any thread starts (fork copies only the calling thread). */
struct hookproc *hookproc_start(const struct agent_config *cfg, void (*child_init)(void *), void *arg,
				char *err, size_t errlen);

/* The runner's process id. */
pid_t hookproc_pid(const struct hookproc *h);

/* Ask the runner to run slot s's reload command (looked up by s->name in
 * the runner's copy) and wait for its answer, at most timeout_s plus a
 * margin. 0 when the command exited 0, else -1 with err saying how it ended
 * or that the runner is gone. The signature is slot_hook_fn's (slot.h). */
int hookproc_run(void *h, const struct agent_slot *s, int timeout_s, char *err, size_t errlen);

/* Close the socket (the runner exits) and reap it. hookproc_free(NULL) is a
 * no-op. */
void hookproc_free(struct hookproc *h);

#endif
