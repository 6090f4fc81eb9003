/*
 * fleetgate backend plugin ABI.
 *
 * This header is all a backend plugin may include from fleetgate. A plugin is
 * a shared module exporting one symbol, FG_BACKEND_SYMBOL, a function that
 * returns its ops table. The host (fleetgated, or the fleetgate CLI) checks
 * abi_version and struct_size before using anything else and refuses a
 * mismatch with a message that says which side is out of date.
 *
 * Rules:
 *  - Structs here only ever gain fields at the end; each added field is
 *    commented with the ABI version that added it. A reader checks
 *    struct_size before touching a field past the first version's end.
 *  - Plugins return errors (0 / -1 with a message), never exit or abort.
 *  - issue, poll, revoke and cacerts may be called from several worker
 *    threads at once: a plugin keeps its own locking.
 *  - Everything a plugin needs from the host (logging, clock, randomness,
 *    durable state) comes through struct fg_host, passed to open.
 *  - Memory handed to the host (certificates, chains) is allocated with
 *    malloc(3); the host frees it (fg_issue_result_clear below).
 */
#ifndef FLEETGATE_PLUGIN_H
#define FLEETGATE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FG_PLUGIN_ABI_VERSION 1
#define FG_BACKEND_SYMBOL "fg_backend_v1"

/* A plugin setting: key/value pairs from the backend's table in the gateway
 * config. Values are strings; numbers arrive in decimal. The host always adds
 * "state_dir" (absolute), against which relative paths are resolved, and
 * "name" (the backend's name in the config). */
struct fg_kv {
	const char *key;
	const char *value;
};

/* Value of key in settings, or NULL. */
static inline const char *fg_kv_get(const struct fg_kv *kv, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(kv[i].key, key) == 0)
			return kv[i].value;
	return NULL;
}

enum fg_level {
	FG_LEVEL_ERROR,
	FG_LEVEL_WARN,
	FG_LEVEL_INFO,
	FG_LEVEL_DEBUG,
	FG_LEVEL_MAX
};

/* Opaque handle of one durable job; pass it back to job_get/job_put. */
struct fg_job;

/* Services the host lends to a plugin. Valid from open until close returns. */
struct fg_host {
	uint32_t abi_version;   /* FG_PLUGIN_ABI_VERSION of the host */
	uint32_t struct_size;   /* sizeof(struct fg_host) of the host */
	void *ctx;              /* host's, pass back unchanged */

	/* One log line; request_id may be NULL. */
	void (*log)(void *ctx, enum fg_level level, const char *request_id, const char *msg);
	/* Wall clock, Unix seconds (tests may shift it). */
	int64_t (*now)(void *ctx);
	/* Cryptographically secure random bytes; 0 or -1. */
	int (*random)(void *ctx, void *buf, size_t len);
	/* Plugin-wide durable state (for example an ACME account). get returns
	 * 1 and a malloc'd value when found, 0 when not, -1 on error. put is
	 * durable when it returns 0. */
	int (*state_get)(void *ctx, const char *key, unsigned char **val, size_t *len);
	int (*state_put)(void *ctx, const char *key, const unsigned char *val, size_t len);
	/* Per-job durable state, same contract; used to write ahead (for
	 * example a serial and to-be-signed data before a signature exists) and
	 * to resume the job after a restart. */
	int (*job_get)(struct fg_job *job, const char *key, unsigned char **val, size_t *len);
	int (*job_put)(struct fg_job *job, const char *key, const unsigned char *val, size_t len);
	/* Reserve a certificate serial (upper-case hex) for this backend: 0 when
	 * reserved, 1 when already taken (draw another), -1 on error. */
	int (*serial_reserve)(void *ctx, const char *serial_hex);

	/* Appended during ABI 1 for CRL numbers: add one to the decimal
	 * counter key in the plugin-wide state (absent counts as 0) in one
	 * step, atomic across every process sharing the store (the gateway
	 * and the CLI), and set *out to the new value. 0 or -1. A plugin
	 * checks struct_size before calling it. */
	int (*state_incr)(void *ctx, const char *key, uint64_t *out);

	/* Appended during ABI 1 for ACME http-01 answered by the gateway
	 * (RFC 8555 8.3): the gateway's HTTP side serves
	 * GET /.well-known/acme-challenge/<token> with key_authorization as
	 * the body until the token is withdrawn. In memory only: a plugin
	 * publishes again when it resumes a job after a restart. Thread-safe
	 * (the HTTP side reads from its own thread). publish returns 0, or -1
	 * when the gateway has no HTTP side (http.listen unset) or the token
	 * is not base64url; withdraw of an unknown token is a no-op. */
	int (*http01_publish)(void *ctx, const char *token, const char *key_authorization);
	void (*http01_withdraw)(void *ctx, const char *token);

	/* Appended during ABI 1 for ARI (RFC 9773): sizeof(struct
	 * fg_issue_result) of the host, so that a plugin writes a result field
	 * only when the host's struct has it (see FG_RESULT_HAS below). */
	uint32_t result_size;

	/* Appended during ABI 1 for the signer process (docs/security.md):
	 * when set, the CA key of this backend lives in a process of its own
	 * and never in the host's memory. A plugin whose CA key the host
	 * holds this way loads only its certificate and asks sign for every
	 * signature. kind says what in (DER) is:
	 *  - FG_SIGN_ALGORITHM: nothing (in NULL); *out is the DER
	 *    AlgorithmIdentifier the key signs with, to put in a write-ahead
	 *    record before signing;
	 *  - FG_SIGN_CERT: a certificate whose signature is empty or ignored,
	 *    built for profile (the write-ahead record), with serial (upper-
	 *    case hex) as reserved with serial_reserve; *out is the same
	 *    certificate signed;
	 *  - FG_SIGN_CRL, FG_SIGN_OCSP: a v2 CRL or a BasicOCSPResponse whose
	 *    signature is ignored (profile and serial NULL); *out is it signed.
	 * The signer checks each object against the issuance boundary
	 * (profile ceilings, no CA certificates, recorded serials) before
	 * signing. Returns 0 with *out (malloc'd), 1 when the signer refused
	 * (final: err says why), -1 when it cannot answer now (retry later).
	 * Thread-safe. NULL, or a struct_size that does not cover it: the
	 * plugin holds its own key. */
	int (*sign)(void *ctx, int kind, const char *profile, const char *serial, const unsigned char *in,
		    size_t len, unsigned char **out, size_t *outlen, char *err, size_t errlen);

	/* Appended during ABI 1 for the daemon's sandbox (docs/security.md):
	 * run an operator's hook program (the ACME dns_hook) outside the
	 * sandbox, where it can reach what it needs (a DNS provider's API, its
	 * own files). path must be a hook the configuration names for this
	 * backend; it is executed directly (no shell) with argv { path,
	 * action }, action being lower-case letters and '-' only, the
	 * gateway's environment plus env_add ("FLEETGATE_NAME=value" strings
	 * only, NULL-terminated), stdin from /dev/null, stdout and stderr
	 * captured together (the last outlen-1 bytes in output), in a process
	 * group of its own killed after timeout_s seconds. 0 when it exited 0;
	 * -1 with err saying how it ended or why it was not run. NULL, or a
	 * struct_size that does not cover it: the plugin runs the hook itself. */
	int (*run_hook)(void *ctx, const char *path, const char *action, const char *const *env_add, int timeout_s,
			char *output, size_t outlen, char *err, size_t errlen);
};

/* What fg_host.sign is asked to sign. */
enum fg_sign_kind {
	FG_SIGN_ALGORITHM = 1,
	FG_SIGN_CERT = 3,
	FG_SIGN_CRL = 4,
	FG_SIGN_OCSP = 5,
	FG_SIGN_KIND_MAX
};

/* 1 when the host lends a signer (fg_host.sign) to this plugin. */
#define FG_HOST_HAS_SIGNER(host)                                                             \
	((host)->struct_size >= offsetof(struct fg_host, sign) + sizeof((host)->sign) &&      \
	 (host)->sign != NULL)

/* 1 when the host runs hook programs for this plugin (fg_host.run_hook). */
#define FG_HOST_HAS_RUN_HOOK(host)                                                           \
	((host)->struct_size >= offsetof(struct fg_host, run_hook) + sizeof((host)->run_hook) && \
	 (host)->run_hook != NULL)

/* X.509 key usage bits (RFC 5280 4.2.1.3), as in the profile. */
enum fg_key_usage {
	FG_KU_DIGITAL_SIGNATURE = 1u << 0,
	FG_KU_NON_REPUDIATION   = 1u << 1,
	FG_KU_KEY_ENCIPHERMENT  = 1u << 2,
	FG_KU_DATA_ENCIPHERMENT = 1u << 3,
	FG_KU_KEY_AGREEMENT     = 1u << 4,
	FG_KU_MAX               = 1u << 5
};

/* What to issue. Everything here was decided by policy and clamped to the
 * profile by the host; names come from this struct, never from the CSR,
 * whose public key (and only that) is certified. */
struct fg_issue_request {
	uint32_t struct_size;               /* sizeof(struct fg_issue_request) of the host */
	const char *request_id;             /* the device's request id */
	const char *device_id;
	const char *slot;
	int renewal;                        /* 1 for a renewal, else 0 */
	struct fg_job *job;                 /* durable job handle for job_get/job_put */
	const unsigned char *csr_der;       /* PKCS#10 DER, checked by the host */
	size_t csr_len;
	const char *subject_cn;             /* subject CN, may be "" */
	const char *const *dns_names;       /* subjectAltName dNSName */
	size_t n_dns;
	const char *const *ip_names;        /* subjectAltName iPAddress, textual */
	size_t n_ip;
	const char *const *emails;          /* subjectAltName rfc822Name */
	size_t n_email;
	int64_t not_before;                 /* Unix seconds */
	int64_t not_after;                  /* Unix seconds */
	uint32_t key_usage;                 /* FG_KU_* bits */
	const char *const *ext_key_usage;   /* "clientAuth", "serverAuth", ... or dotted OIDs */
	size_t n_eku;
	const char *profile;                /* profile name */
	const char *challenge;              /* SCEP challenge from policy, or NULL */
	/* Appended during ABI 1 for ACME challenges. */
	const char *acme_challenge;         /* challenge mode the policy chose
					     * ("http-01-gateway", "http-01-agent",
					     * "dns-01"), or NULL: the backend's */
	const char *const *challenges_ready; /* tokens the device says it serves
					     * (its acknowledgement), for this call */
	size_t n_challenges_ready;

	/* Appended during ABI 1 for EST csrattrs: sizeof(struct fg_csr_needs)
	 * of the host, so that a plugin writes fg_csr_needs.key_type only
	 * into a host that has it (read only when struct_size covers it). */
	size_t csr_needs_size;

	/* Appended during ABI 1 for EST serverkeygen: 1 when the policy
	 * marked the slot server-generated. The CA makes the key; the
	 * plugin returns it only encrypted to the CSR's public key (the
	 * device's one-time transport key) in fg_issue_result.enc_key, and
	 * never keeps it in clear. Only sent to a plugin whose ops say
	 * server_keygen = 1. */
	int server_keygen;
};

/* Appended during ABI 1: an ACME challenge (RFC 8555 8) the device serves
 * on its own host (fg_issue_result.challenges). */
struct fg_challenge {
	char type[16];                      /* "http-01" (RFC 8555 8.3) */
	char identifier[256];               /* the DNS name or IP address validated */
	char token[128];                    /* base64url, RFC 8555 8.3 */
	char key_authorization[256];        /* token "." base64url(JWK thumbprint), RFC 8555 8.1 */
};

enum fg_issue_status {
	FG_ISSUE_OK,        /* cert_der (and chain) filled */
	FG_ISSUE_PENDING,   /* call poll later, after retry_after seconds */
	FG_ISSUE_REJECTED,  /* the CA refused; message says why; final */
	FG_ISSUE_ERROR,     /* transient failure (CA unreachable...); retried with backoff */
	FG_ISSUE_STATUS_MAX
};

struct fg_issue_result {
	enum fg_issue_status status;
	uint32_t retry_after;               /* seconds, for PENDING and ERROR */
	unsigned char *cert_der;            /* malloc'd */
	size_t cert_len;
	unsigned char **chain_der;          /* malloc'd array of malloc'd DER, issuer first */
	size_t *chain_len;                  /* malloc'd */
	size_t n_chain;
	char message[512];                  /* for the operator and the device */
	/* Appended during ABI 1 for ACME challenges answered by the device:
	 * with FG_ISSUE_PENDING, what the device must serve before it sends
	 * the request again with challenges_ready. A plugin fills these only
	 * when req->struct_size covers acme_challenge (a host that knows them). */
	struct fg_challenge *challenges;    /* malloc'd array */
	size_t n_challenges;

	/* Appended during ABI 1 for EST serverkeygen: with server_keygen, the
	 * CA-made private key as a DER CMS EnvelopedData (RFC 5652) whose
	 * content is the PKCS#8 PrivateKeyInfo, encrypted to the CSR's public
	 * key; malloc'd. Written only when req->struct_size covers
	 * server_keygen. */
	unsigned char *enc_key;
	size_t enc_key_len;

	/* Appended during ABI 1 for ARI (RFC 9773): when the device should
	 * renew this certificate, Unix seconds, as the CA suggested; 0 when
	 * the CA said nothing (the agent's own schedule applies). A time
	 * before the certificate's notBefore means "renew now" (the host
	 * passes it on as the notBefore). Write it only when
	 * FG_RESULT_HAS(host, renew_after). */
	int64_t renew_after;
};

/* 1 when the host's struct fg_issue_result has the named field. A plugin
 * built with this header zeroes or clears (fg_issue_result_clear) only as
 * much of a result as the host has: offsetof(..., renew_after) when
 * FG_RESULT_HAS(host, renew_after) is 0. */
#define FG_RESULT_HAS(host, field)                                                          \
	((host)->struct_size >= offsetof(struct fg_host, result_size) + sizeof(uint32_t) &&  \
	 (host)->result_size >= offsetof(struct fg_issue_result, field) +                     \
					sizeof(((struct fg_issue_result *)0)->field))

/* Free what a plugin put in res and zero it. */
static inline void fg_issue_result_clear(struct fg_issue_result *res)
{
	if (res == NULL)
		return;
	free(res->cert_der);
	for (size_t i = 0; i < res->n_chain; i++)
		free(res->chain_der[i]);
	free(res->chain_der);
	free(res->chain_len);
	free(res->challenges);
	free(res->enc_key);
	memset(res, 0, sizeof *res);
}

/* CA certificates a backend issues under, issuer of leaves first. */
struct fg_cert_list {
	unsigned char **der;                /* malloc'd array of malloc'd DER */
	size_t *len;                        /* malloc'd */
	size_t n;
};

static inline void fg_cert_list_clear(struct fg_cert_list *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < l->n; i++)
		free(l->der[i]);
	free(l->der);
	free(l->len);
	memset(l, 0, sizeof *l);
}

/* What a backend needs in the device's CSR (see csr_needs below). */
struct fg_csr_needs {
	/* 1 when the CA takes subject and names from the CSR rather than
	 * from the request (SCEP, most EST servers): the host then makes the
	 * device send a CSR naming exactly what the policy decided. */
	int names_from_csr;
	/* The challengePassword (PKCS#9, RFC 2985 5.4.1) the CSR must carry,
	 * "" for none. */
	char challenge[256];

	/* Appended during ABI 1 for EST csrattrs: the key type the CA asks
	 * for when the CSR's key is not one it takes ("p256", "p384",
	 * "rsa2048", "rsa3072", "rsa4096", "ed25519"), else "". The device
	 * then rebuilds its CSR with a new key of that type. Written only when
	 * the request's csr_needs_size covers it. */
	char key_type[16];
};

/* What a CA asks of CSRs (EST /csrattrs, RFC 7030 4.5), for the policy. */
struct fg_csr_attrs {
	char key_type[16];                  /* "p256", "p384", "ec", "rsa", "ed25519" or "" for any */
	char oids[1024];                    /* the OIDs asked for, short names or dotted, space-separated */
};

/* CRL reason codes (RFC 5280 5.3.1) used by revoke. */
enum fg_revoke_reason {
	FG_REVOKE_UNSPECIFIED = 0,
	FG_REVOKE_KEY_COMPROMISE = 1,
	FG_REVOKE_SUPERSEDED = 4,
	FG_REVOKE_CESSATION = 5
};

/* One revoked certificate, as the host's store knows it (make_crl). */
struct fg_revoked {
	const char *serial_hex;             /* upper-case hex, as serial_reserve took it */
	int64_t revoked_at;                 /* Unix seconds: the CRL's revocationDate */
};

/* Certificate status for OCSP (RFC 6960 4.2.1 CertStatus), answered by the
 * host from its store when a plugin asks through fg_cert_status_fn. */
enum fg_cert_state {
	FG_CERT_GOOD,                       /* issued by this backend, not revoked */
	FG_CERT_REVOKED,                    /* revoked at revoked_at */
	FG_CERT_UNKNOWN,                    /* no such certificate from this backend */
	FG_CERT_STATE_MAX
};

struct fg_cert_status {
	enum fg_cert_state state;
	int64_t revoked_at;                 /* Unix seconds, for FG_CERT_REVOKED */
};

/* The host's status lookup lent to ocsp_respond: fills *out for the serial
 * (upper-case hex) and returns 0, or -1 when the store cannot answer (the
 * plugin then answers OCSP internalError: a responder never guesses). */
typedef int (*fg_cert_status_fn)(void *arg, const char *serial_hex, struct fg_cert_status *out);

/* Results of ocsp_respond besides -1. */
enum {
	FG_OCSP_ANSWERED = 0,               /* *resp is a DER OCSPResponse to send */
	FG_OCSP_NOT_MINE = 1                /* the request names no certificate of this CA */
};

struct fg_backend_ops {
	uint32_t abi_version;   /* FG_PLUGIN_ABI_VERSION the plugin was built for */
	uint32_t struct_size;   /* sizeof(struct fg_backend_ops) of the plugin */
	const char *name;       /* plugin name, e.g. "local" */
	const char *description;

	/* Set up an instance from settings. With setting create = "yes" the
	 * plugin may create its own material (the local CA makes its key and
	 * certificate). On success *state is the instance; on failure -1 and
	 * err names what failed and what to do. */
	int (*open)(const struct fg_host *host, const struct fg_kv *settings, size_t n,
		    void **state, char *err, size_t errlen);

	/* Start (or resume, with the same req->job) issuance. Must be
	 * idempotent per job: a resumed job never yields a second serial. */
	int (*issue)(void *state, const struct fg_issue_request *req, struct fg_issue_result *res);

	/* Ask again about a PENDING job; may be NULL for backends that never pend. */
	int (*poll)(void *state, const struct fg_issue_request *req, struct fg_issue_result *res);

	/* Revoke a certificate this backend issued. 0 or -1 with err. */
	int (*revoke)(void *state, const unsigned char *cert_der, size_t cert_len,
		      enum fg_revoke_reason reason, char *err, size_t errlen);

	/* The issuing chain, issuer of leaves first. 0 or -1 with err. */
	int (*cacerts)(void *state, struct fg_cert_list *out, char *err, size_t errlen);

	/* Release the instance; state may be NULL. */
	void (*close)(void *state);

	/* The fields below were appended during ABI 1 (before its first
	 * release); the host reads them only when struct_size covers them. */

	/* What the device's CSR must carry for this backend, asked before the
	 * job is admitted (nothing durable exists yet). 0 with needs filled,
	 * or -1 with err. May be NULL: the backend takes names from req. */
	int (*csr_needs)(void *state, const struct fg_issue_request *req, struct fg_csr_needs *needs,
			 char *err, size_t errlen);

	/* Operator inspection (fleetgate backend cert|crl): fetch a
	 * certificate the CA issued, by serial (upper-case hex), or the CA's
	 * current CRL, as malloc'd DER. 0, or -1 with err. May be NULL. */
	int (*fetch_cert)(void *state, const char *serial_hex, unsigned char **der, size_t *len,
			  char *err, size_t errlen);
	int (*fetch_crl)(void *state, unsigned char **der, size_t *len, char *err, size_t errlen);

	/* Appended during ABI 1 for the gateway's HTTP side (CRL and OCSP
	 * served by fleetgated for a CA whose key the plugin holds). Both may
	 * be NULL (an upstream CA publishes its own). They are called from the
	 * gateway's HTTP thread and from the CLI, concurrently with issue.
	 *
	 * make_crl: sign a full CRL (RFC 5280 5: v2, authorityKeyIdentifier,
	 * a cRLNumber the plugin keeps monotonic in its state) listing the n
	 * certificates the host's store has revoked for this backend, with
	 * thisUpdate = now and a nextUpdate the plugin's settings decide (the
	 * host reads it back from the DER to know when to make the next one).
	 * Reason codes come from the plugin's own revoke records. *der is
	 * malloc'd DER for the host to free. 0, or -1 with err. */
	int (*make_crl)(void *state, const struct fg_revoked *list, size_t n, int64_t now,
			unsigned char **der, size_t *len, char *err, size_t errlen);

	/* ocsp_respond: answer a DER OCSPRequest (RFC 6960 4.1) for the
	 * certificates of this CA: the plugin matches each CertID's issuer
	 * hashes against its CA, asks status() for the serials that match,
	 * and signs a BasicOCSPResponse with the CA key (thisUpdate = now,
	 * nextUpdate from its settings, the nonce echoed). A request it cannot
	 * parse gets a malformedRequest response. Returns FG_OCSP_ANSWERED
	 * with *resp (malloc'd DER OCSPResponse), FG_OCSP_NOT_MINE when no
	 * CertID names this CA (the host asks the next backend), or -1 with
	 * err. */
	int (*ocsp_respond)(void *state, const unsigned char *req, size_t req_len,
			    fg_cert_status_fn status, void *status_arg, int64_t now,
			    unsigned char **resp, size_t *resp_len, char *err, size_t errlen);

	/* Appended during ABI 1 for EST csrattrs: what the CA asks of CSRs,
	 * for the policy (req.backend_csrattrs). 1 with out filled, 0 when
	 * the CA states nothing, -1 with err when it cannot be known now.
	 * Called from worker threads before each policy call: a plugin
	 * answers from a cache. May be NULL. */
	int (*csr_attrs)(void *state, struct fg_csr_attrs *out, char *err, size_t errlen);

	/* Appended during ABI 1 for EST serverkeygen: 1 when issue honours
	 * fg_issue_request.server_keygen (see there), else 0. */
	int server_keygen;

	/* Appended during ABI 1 for operator commands on a backend's own
	 * account or material (fleetgate backend acme-rollover: the ACME
	 * account key rollover). verb names the command ("account-rollover");
	 * args are its arguments, if any. Called from the CLI, in a process
	 * of its own, while fleetgated may be running: durable changes go
	 * through the host's state_put. On success 0 and *out is a malloc'd
	 * text for the operator (or NULL); -1 with err otherwise, also for a
	 * verb the plugin does not know. May be NULL. */
	int (*admin)(void *state, const char *verb, const char *const *args, size_t n_args,
		     char **out, char *err, size_t errlen);
};

/* The one exported entry point: `const struct fg_backend_ops *fg_backend_v1(void);` */
typedef const struct fg_backend_ops *(*fg_backend_entry_fn)(void);

#endif
