/*
 * confine: the network-facing daemon confines itself (docs/security.md).
 *
 * fleetgated, once the signer holds the CA keys, the store is open and the
 * plugins are loaded, and before it starts any thread:
 *
 *   confine_broker_start  forks the policy reader, a small process outside
 *                         the sandbox that opens two files for the daemon,
 *                         the policy and its fixtures, and runs the hooks
 *                         the configuration names (editors replace the
 *                         policy file, and Landlock rules follow inodes,
 *                         so the daemon could not read the new one itself
 *                         without reading the state directory, where the
 *                         CA key lies);
 *   confine_apply         applies the Landlock ruleset built from the
 *                         configuration: read-write on the store's files,
 *                         the CRL and plugin directories; read-only on the
 *                         gateway's CURVE key, files its backends name, the
 *                         system's libraries and trust stores; TCP bind on
 *                         its listening ports and connect on the ports of
 *                         its backends' URLs; nothing of a CA key directory;
 *
 * and once it has bound its sockets:
 *
 *   confine_drop_user     started as root with user = "...", switches to
 *                         that user and its group for good (checked).
 *
 * Each step follows the sandbox setting: "required" fails (the daemon
 * stops) when the kernel cannot apply it, "best-effort" warns, "off" does
 * nothing. confine_describe says what applied, for the log, the admin
 * socket's status and `fleetgate status`.
 */
#ifndef FG_CONFINE_H
#define FG_CONFINE_H

#include <stddef.h>

#include "config.h"

/* Fork the policy reader and make fg_read_file use it for the policy and
 * its fixtures; when the daemon ends, it removes the admin socket at
 * admin_sock (NULL: none). Call before any thread starts. 0, or -1 with
 * err. */
int confine_broker_start(const struct gw_config *cfg, const char *admin_sock, char *err, size_t errlen);
/* 1 when the policy reader runs, and with it the hook runner. */
int confine_hook_runner(void);

/* Run a hook the configuration names (an ACME dns_hook) through the
 * policy reader, outside the sandbox, as the daemon's user: the contract
 * of fg_host.run_hook (plugin.h). Thread-safe. */
int confine_run_hook(const char *path, const char *action, const char *const *env_add, int timeout_s, char *output,
		     size_t outlen, char *err, size_t errlen);

/* Stop the policy reader (at exit). */
void confine_broker_stop(void);

/* Who is uid, and is it in group gid ((gid_t)-1: do not ask)? Asks the
 * policy reader when it runs (the confined daemon does not read the user
 * databases), the system otherwise. 0 with name ("" when uid has none) and
 * *member (1 in the group, 0 not, -1 no such user); -1 when the reader
 * did not answer. */
int confine_lookup_peer(uid_t uid, gid_t gid, char *name, size_t namelen, int *member);

/* Prepare (with user set and started as root: give the user the files it
 * must write) and apply the Landlock ruleset. Call with one thread.
 * 0, or -1 with err naming what failed and what to do. */
int confine_apply(const struct gw_config *cfg, char *err, size_t errlen);

/* Switch to cfg->user (started as root). 0, or -1 with err. Thread-safe
 * with respect to the process: every thread changes credentials. */
int confine_drop_user(const struct gw_config *cfg, char *err, size_t errlen);

/* One line: what confines the daemon now. */
const char *confine_describe(void);

#endif
