/*
 * sandbox: what fleetgate-agent may do once it has confined itself, as one
 * list built from its configuration, and the code that applies it
 * (Landlock and no_new_privs through fg_landlock.h).
 *
 * The agent applies it after the configuration, the bundle and its keys
 * are loaded and before it talks to the network (agent.c). From then on it
 * may write only its state directory, the directories of its slots' key,
 * certificate and chain files (an atomic install renames a temp file
 * there), the bundle's directory (trust anchor updates rewrite the bundle
 * the same way) and the ACME webroot; read its configuration and what it
 * reads at run time (facts, libraries, name service files); connect over
 * TCP only to the gateway's port and bind only the ACME http-01 port. It
 * may execute nothing: reload commands run in the hook runner
 * (hookproc.h), forked before the sandbox applies. docs/security.md, "The
 * agent", describes the model.
 */
#ifndef FG_AGENT_SANDBOX_H
#define FG_AGENT_SANDBOX_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "agent_config.h"
#include "fg_bundle.h"

#define SANDBOX_MAX_PORTS 4

struct sandbox_rule {
	char path[PATH_MAX];
	int access;             /* enum fg_ll_access */
	unsigned flags;         /* FG_LL_OPTIONAL */
	const char *why;        /* static text, for the debug log */
};

struct sandbox_policy {
	struct sandbox_rule *rules;       /* malloc'd, n of them */
	size_t n;
	uint16_t connect[SANDBOX_MAX_PORTS];  /* TCP ports the agent may connect to */
	size_t nconnect;
	uint16_t bind[SANDBOX_MAX_PORTS];     /* TCP ports it may bind */
	size_t nbind;
	char config_dir_writable[PATH_MAX];   /* the writable rule path that holds the config, "" none */
};

/* The policy for cfg and bundle b (the gateway endpoint). 0, or -1 with err
 * (out of memory, a path too long, a malformed endpoint). Release with
 * sandbox_policy_clear. */
int sandbox_policy_build(const struct agent_config *cfg, const struct fg_bundle *b,
			 struct sandbox_policy *p, char *err, size_t errlen);
void sandbox_policy_clear(struct sandbox_policy *p);

/* 1 when everything want allows is allowed by have (a reloaded
 * configuration fits the sandbox applied at start), else 0 with why naming
 * the first path or port that does not. */
int sandbox_policy_covers(const struct sandbox_policy *have, const struct sandbox_policy *want,
			  char *why, size_t whylen);

/* Apply p in mode (enum fg_sandbox_mode) to this process. 0 with desc
 * saying what applied ("landlock ABI 7, 14 paths, ..."), or -1 with err.
 * Must run before any thread starts. */
int sandbox_apply(const struct sandbox_policy *p, int mode, char *desc, size_t desclen, char *err,
		  size_t errlen);

#endif
