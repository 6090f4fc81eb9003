/*
 * backend: loading backend plugins and lending them host services.
 *
 * Each backend named in the config is a plugin (a shared module found by
 * name, see backend_plugin_path) opened once per process with its settings.
 * The host services it gets (struct fg_host) log through fg_log, read the
 * clock, draw randomness, and keep durable state in the store: plugin-wide
 * state and serial reservations on a connection of the backend set's own
 * (behind a mutex), per-job state on the calling worker's connection, which
 * travels in struct fg_job.
 */
#ifndef FG_BACKEND_H
#define FG_BACKEND_H

#include <stddef.h>
#include "fleetgate/plugin.h"
#include "config.h"
#include "store.h"

/* The job handle plugins get in fg_issue_request.job. */
struct fg_job {
	struct store *st;          /* the calling worker's connection */
	const char *curve_key;
	const char *request_id;
};

struct backend {
	char name[64];             /* the config's name for it, e.g. "local" */
	const struct fg_backend_ops *ops;
	void *state;               /* the plugin's instance */
};

struct backends;

/* Load and open every backend in cfg. With create set, settings get
 * create = "yes" (fleetgate init: the local CA makes its key). NULL with err
 * on failure, naming the backend and what to do. */
struct backends *backends_open(const struct gw_config *cfg, int create, char *err, size_t errlen);
/* How the CA keys of "local" backends sign when they are in the signer
 * process: signer_client_sign_cb (fleetgated) or admin_client_sign (the
 * CLI, through a running daemon). The contract of signer_client_sign. */
typedef int (*backend_sign_fn)(void *arg, const char *backend, int kind, const char *profile,
			       const char *serial, const unsigned char *in, size_t len, unsigned char **out,
			       size_t *outlen, char *err, size_t errlen);
/* The same as backends_open, with those plugins signing through sign(arg,
 * ...): they get fg_host.sign and never load their key. arg (borrowed)
 * outlives the set. */
struct backends *backends_open_signer(const struct gw_config *cfg, int create, backend_sign_fn sign, void *arg,
				      char *err, size_t errlen);
void backends_free(struct backends *bs);
/* The backend of that name, or NULL. */
struct backend *backends_find(struct backends *bs, const char *name);

/* The key authorization a plugin published for an ACME http-01 token
 * (host service http01_publish), copied into out: 1 when found, 0 when
 * not. Safe from any thread (the HTTP side calls it). */
int backends_http01_get(struct backends *bs, const char *token, char *out, size_t outlen);

/* One backend call (issue or poll) per job at a time: a device's retry
 * and the poller may both resume the same job, and two calls racing
 * through one order would answer the device twice, differently. claim
 * returns 1 when the job (curve key, request id) is now the caller's, 0
 * when another thread has it, -1 when out of memory; release gives it
 * back. Thread-safe. */
int backends_job_claim(struct backends *bs, const char *curve_key, const char *request_id);
void backends_job_release(struct backends *bs, const char *curve_key, const char *request_id);

/* Where the plugin for name lives: plugin_dir (config) when set, else
 * $FLEETGATE_PLUGIN_DIR, else the build tree next to the executable
 * (<exe dir>/../plugins/<name>/fleetgate-<name>.so), else the installed
 * tree the executable belongs to (<exe dir>/../LIBDIR/fleetgate), else
 * FG_PLUGIN_DIR.
 * 0 with out filled when a readable file was found, -1 with err listing
 * the places tried. */
int backend_plugin_path(const char *plugin_dir, const char *name, char *out, size_t outlen,
			char *err, size_t errlen);

/* The checks a plugin's ops table must pass before use: the ABI version,
 * a struct_size covering this ABI's fields, open/issue/close present.
 * name and path only go into the message. 0, or -1 with err saying which
 * side to rebuild. */
int backend_check_ops(const struct fg_backend_ops *ops, const char *name, const char *path,
		      char *err, size_t errlen);

#endif
