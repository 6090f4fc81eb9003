/*
 * policy: Lua 5.4 enrollment policies in a sandbox.
 *
 * One struct policy is one Lua state; each worker thread owns its own. The
 * state has only base (without load, loadstring, dofile, loadfile, require,
 * collectgarbage), string, table, math and utf8; chunks load as text only; a
 * lua_Alloc caps memory and a count hook caps instructions per call.
 *
 * The policy file defines enroll(req) (required) and checkin(dev) (optional).
 * Helpers available to the policy: allow{...}, deny(reason), and the `fleet`
 * table (fleet.has_suffix, fleet.days, fleet.hours, fleet.log).
 *
 * req (a read-only view):
 *   req.protocol      "zmq" (agents) or "est" (the EST front-end, est.h)
 *   req.profile       the profile the front-end asks for (an EST label's
 *                     profile), or nil
 *   req.request_id, req.slot
 *   req.renew         true for a renewal
 *   req.new_device    true when this request creates the device
 *   req.device        { id =, group =, hostname =, serial = (pre-registered only),
 *                       attrs = { free attributes of the import, strings } }
 *   req.token         { group =, bound = { attributes the token is bound to } }
 *                     when a token was presented, else nil
 *   req.facts         { hostname, machine_id, os_id, os_version, os_pretty_name,
 *                       kernel_release, arch, dmi_product_uuid, dmi_product_serial,
 *                       secure_boot (true/false/nil), tpm_present, agent_version }
 *   req.csr           { cn =, dns = {...}, key_type = "ec"|"rsa"|"ed25519",
 *                       curve = "P-256"|"P-384"|nil, key_bits = N }
 * Decision: allow{ profile =, backend =, cn =, dns = {...}, ip = {...},
 *                  email = {...}, validity = seconds, challenge =,
 *                  acme_challenge = "http-01-gateway"|"http-01-agent"|"dns-01" }
 *           or deny("reason shown to the device and in the audit log").
 */
#ifndef FG_POLICY_H
#define FG_POLICY_H

#include <stddef.h>
#include <stdint.h>

struct policy;

struct policy_limits {
	size_t memory;           /* bytes of Lua heap, e.g. 4 MiB */
	uint64_t instructions;   /* VM instructions per call, e.g. 1,000,000 */
};

struct policy_facts {
	const char *hostname, *machine_id, *os_id, *os_version, *os_pretty_name;
	const char *kernel_release, *arch, *dmi_product_uuid, *dmi_product_serial;
	const char *agent_version;
	int secure_boot;         /* -1 unknown, 0 off, 1 on */
	int tpm_present;
};

/* What one backend's CA asks of CSRs (EST /csrattrs), for req.backend_csrattrs. */
struct policy_csrattrs {
	const char *backend;
	const char *key_type;           /* "p256", "ec", "rsa", ... or "" */
	const char *const *oids;
	size_t noids;
};

struct policy_request {
	const char *protocol;
	const char *request_id;
	const char *slot;
	int renew;
	int new_device;
	const char *device_id;
	const char *device_group;
	const char *device_hostname;
	const char *token_group;  /* NULL when no token was presented */
	struct policy_facts facts;
	const char *csr_cn;
	const char *const *csr_dns;
	size_t csr_ndns;
	const char *csr_key_type;
	const char *csr_curve;
	int csr_key_bits;
	/* bulk provisioning (fleetgate device import, token create --bind) */
	const char *device_serial;      /* pre-registered serial, or NULL */
	const char *device_attrs_json;  /* JSON object of the free attributes, or NULL */
	const char *token_bound_json;   /* JSON object of the token's bindings, or NULL */
	/* what the backends' CAs ask of CSRs (EST /csrattrs), by backend */
	const struct policy_csrattrs *backend_csrattrs;
	size_t nbackend_csrattrs;
	const char *profile;            /* req.profile: the EST label's profile, or NULL */
};

#define POLICY_MAX_NAMES 32

struct policy_decision {
	int allow;
	char reason[256];        /* deny reason, or "" */
	char backend[64];        /* "" = the profile's backend */
	char profile[64];        /* "" = "default" profile */
	char cn[256];
	char *dns[POLICY_MAX_NAMES];   /* malloc'd */
	size_t ndns;
	char *ip[POLICY_MAX_NAMES];
	size_t nip;
	char *email[POLICY_MAX_NAMES];
	size_t nemail;
	int64_t validity;        /* seconds; 0 = profile default */
	char challenge[256];
	char acme_challenge[32]; /* "" = the ACME backend's challenge setting */
	char keygen[16];         /* "server": the CA makes the key (EST serverkeygen); "" or "device" */
	int anchors;             /* 1: hand the backend's CA chain to the agent as trust anchors */
};
void policy_decision_clear(struct policy_decision *d);

/* Compile path in a fresh sandbox and check that enroll is a function
 * (and checkin, when defined).
 * Errors carry the file name and line ("policy.lua:12: ..."). */
struct policy *policy_new(const char *path, const struct policy_limits *lim,
			  char *err, size_t errlen);
void policy_free(struct policy *p);

/* Like policy_new, from source text in memory (len bytes; need not be
 * NUL-terminated). name is the file name used as chunk name and in
 * messages ("policy.lua:12: ..."). Also refuses a checkin that is defined
 * but not a function. Used by hot reload, where every worker compiles the
 * text the main thread validated, never a re-read of the file. */
struct policy *policy_new_text(const char *name, const char *text, size_t len,
			       const struct policy_limits *lim, char *err, size_t errlen);

/* Read a policy file (size-capped) into a malloc'd, NUL-terminated buffer
 * the caller frees. 0, or -1 with err. */
int policy_read_source(const char *path, char **text, size_t *len, char *err, size_t errlen);

/* The file name the policy was compiled as (borrowed). */
const char *policy_name(const struct policy *p);

/* Run enroll(req). 0 with *out filled (allow or deny); -1 when the policy
 * itself failed (runtime error, instruction or memory cap, bad return value):
 * err says what, and the state stays usable for the next call. */
int policy_enroll(struct policy *p, const struct policy_request *req,
		  struct policy_decision *out, char *err, size_t errlen);

#endif
