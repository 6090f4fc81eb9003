/*
 * backend.c: loading backend plugins and lending them host services (see
 * backend.h).
 *
 * Each configured backend gets its own dlopen handle (the loader shares one
 * copy of a module opened twice), its own host table and a host context
 * naming it, so that a plugin's state and serials are kept under its
 * backend name. Plugin-wide state and serial reservations go through one
 * store connection owned by the backend set, used under a mutex because
 * plugins call in from several worker threads; per-job state goes through
 * the calling worker's own connection, carried in struct fg_job.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "confine.h"
#include "fg_log.h"
#include "fg_util.h"
#include "stats.h"

/* Who a host table serves: the backend set and the backend's name. */
struct host_ctx {
	struct backends *bs;
	char name[64];
	char component[80];        /* "backend:<name>", for log lines */
};

struct loaded {
	struct backend b;
	void *dl;                  /* dlopen handle */
	struct fg_host host;       /* lent to the plugin until close */
	struct host_ctx hctx;
};

/* One published ACME http-01 answer (RFC 8555 8.3). */
struct http01 {
	char token[128];
	char keyauth[256];
};

#define HTTP01_MAX 4096            /* tokens published at once, all backends */

struct backends {
	struct loaded *v;
	size_t n;                  /* entries of v in use (opened or half-opened) */
	struct store *st;          /* plugin-wide state and serials */
	pthread_mutex_t lock;      /* guards st */
	int http_on;               /* the gateway has an HTTP side (http.listen) */
	pthread_mutex_t h01_lock;  /* guards h01 */
	struct http01 *h01;        /* published http-01 answers */
	size_t nh01, caph01;
	char **busy;               /* "<curve key> <request id>" of jobs in a backend call, under h01_lock */
	size_t nbusy, capbusy;
	backend_sign_fn sign;      /* how the local backends' CA keys sign, or NULL: they load them */
	void *sign_arg;
};

static void h_log(void *ctx, enum fg_level level, const char *request_id, const char *msg)
{
	struct host_ctx *h = ctx;
	/* enum fg_level and enum fg_log_level have the same values. */
	enum fg_log_level lvl = level < FG_LEVEL_MAX ? (enum fg_log_level)level : FG_LOG_INFO;

	fg_log(lvl, h->component, request_id, "%s", msg ? msg : "");
}

static int64_t h_now(void *ctx)
{
	(void)ctx;
	return fg_now();
}

static int h_random(void *ctx, void *buf, size_t len)
{
	(void)ctx;
	return fg_random(buf, len);
}

static int h_state_get(void *ctx, const char *key, unsigned char **val, size_t *len)
{
	struct host_ctx *h = ctx;
	char err[512];

	pthread_mutex_lock(&h->bs->lock);
	int r = store_plugin_state_get(h->bs->st, h->name, key, val, len, err, sizeof err);
	pthread_mutex_unlock(&h->bs->lock);
	if (r < 0)
		fg_err(h->component, NULL, "reading plugin state '%s': %s", key, err);
	return r;
}

static int h_state_put(void *ctx, const char *key, const unsigned char *val, size_t len)
{
	struct host_ctx *h = ctx;
	char err[512];

	pthread_mutex_lock(&h->bs->lock);
	int r = store_plugin_state_put(h->bs->st, h->name, key, val, len, err, sizeof err);
	pthread_mutex_unlock(&h->bs->lock);
	if (r < 0)
		fg_err(h->component, NULL, "writing plugin state '%s': %s", key, err);
	return r;
}

static int h_job_get(struct fg_job *job, const char *key, unsigned char **val, size_t *len)
{
	char err[512];

	if (job == NULL || job->st == NULL) {
		fg_err("backend", NULL, "a plugin asked for job state '%s' without a job", key);
		return -1;
	}
	int r = store_job_state_get(job->st, job->curve_key, job->request_id, key, val, len, err,
				    sizeof err);
	if (r < 0)
		fg_err("backend", job->request_id, "reading job state '%s': %s", key, err);
	return r;
}

static int h_job_put(struct fg_job *job, const char *key, const unsigned char *val, size_t len)
{
	char err[512];

	if (job == NULL || job->st == NULL) {
		fg_err("backend", NULL, "a plugin wrote job state '%s' without a job", key);
		return -1;
	}
	int r = store_job_state_put(job->st, job->curve_key, job->request_id, key, val, len, err,
				    sizeof err);
	if (r < 0)
		fg_err("backend", job->request_id, "writing job state '%s': %s", key, err);
	return r;
}

static int h_state_incr(void *ctx, const char *key, uint64_t *out)
{
	struct host_ctx *h = ctx;
	char err[512];

	pthread_mutex_lock(&h->bs->lock);
	int r = store_plugin_state_incr(h->bs->st, h->name, key, out, err, sizeof err);
	pthread_mutex_unlock(&h->bs->lock);
	if (r < 0)
		fg_err(h->component, NULL, "counting plugin state '%s': %s", key, err);
	return r;
}

static int h_serial_reserve(void *ctx, const char *serial_hex)
{
	struct host_ctx *h = ctx;
	char err[512];
	int r;

	/* With group commit the reservation runs on the writer connection,
	 * queued with other threads' writes, and leaves bs->st alone: holding
	 * the lock would make every reservation wait for the one before. */
	if (store_group_commit_on()) {
		r = store_serial_reserve(h->bs->st, h->name, serial_hex, fg_now(), err, sizeof err);
	} else {
		pthread_mutex_lock(&h->bs->lock);
		r = store_serial_reserve(h->bs->st, h->name, serial_hex, fg_now(), err, sizeof err);
		pthread_mutex_unlock(&h->bs->lock);
	}
	if (r < 0)
		fg_err(h->component, NULL, "reserving serial %s: %s", serial_hex, err);
	return r;
}

/* fg_host.run_hook: the hook runner outside the daemon's sandbox. */
static int h_run_hook(void *ctx, const char *path, const char *action, const char *const *env_add, int timeout_s,
		      char *output, size_t outlen, char *err, size_t errlen)
{
	(void)ctx;
	return confine_run_hook(path, action, env_add, timeout_s, output, outlen, err, errlen);
}

/* fg_host.sign: forward to the signer process. A certificate's serial
 * must be reserved in the store first (the write-ahead step); the signer
 * is told so in the same message and refuses a certificate whose own
 * serial is not one announced. */
static int h_sign(void *ctx, int kind, const char *profile, const char *serial, const unsigned char *in,
		  size_t len, unsigned char **out, size_t *outlen, char *err, size_t errlen)
{
	struct host_ctx *h = ctx;
	char serr[512] = "";
	static const char *const what[FG_SIGN_KIND_MAX] = {
		[FG_SIGN_ALGORITHM] = "algorithm query", [FG_SIGN_CERT] = "certificate",
		[FG_SIGN_CRL] = "CRL", [FG_SIGN_OCSP] = "OCSP response",
	};

	*out = NULL;
	*outlen = 0;
	if (kind <= 0 || kind >= FG_SIGN_KIND_MAX || what[kind] == NULL) {
		fg_seterr(err, errlen, "unknown kind %d of object to sign", kind);
		return 1;
	}
	if (kind == FG_SIGN_CERT) {
		if (serial == NULL || serial[0] == '\0') {
			fg_seterr(err, errlen, "a certificate to sign needs the serial it was reserved under");
			return 1;
		}
		pthread_mutex_lock(&h->bs->lock);
		int r = store_serial_reserved(h->bs->st, h->name, serial, serr, sizeof serr);
		pthread_mutex_unlock(&h->bs->lock);
		if (r < 0) {
			fg_seterr(err, errlen, "cannot check the reservation of serial %s: %s", serial, serr);
			return -1;
		}
		if (r == 0) {
			fg_err(h->component, NULL, "refusing to sign serial %s: it is not reserved in the store (no write-ahead record)",
			       serial);
			fg_seterr(err, errlen, "serial %s is not reserved in the store; nothing was signed", serial);
			return 1;
		}
	} else {
		serial = NULL;
	}
	int r = h->bs->sign(h->bs->sign_arg, h->name, kind, profile, serial, in, len, out, outlen, serr, sizeof serr);
	if (r > 0)
		fg_err(h->component, NULL, "the signer refused a %s%s%s: %s", what[kind], serial ? " of serial " : "",
		       serial ? serial : "", serr);
	else if (r < 0)
		fg_warn(h->component, NULL, "%s not signed: %s", what[kind], serr);
	fg_seterr(err, errlen, "%s", serr);
	return r;
}

/* base64url without padding (RFC 4648 5), as ACME tokens are. */
static int token_ok(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n >= sizeof(((struct http01 *)0)->token))
		return 0;
	return strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n;
}

/* fg_host.http01_publish: keep (or replace) the answer for token. */
static int h_http01_publish(void *ctx, const char *token, const char *keyauth)
{
	struct host_ctx *h = ctx;
	struct backends *bs = h->bs;
	int rc = -1;

	if (!bs->http_on) {
		fg_err(h->component, NULL, "http-01 token %s cannot be served: the gateway has no HTTP side; set http = { listen = \"0.0.0.0:80\" } in fleetgated.conf",
		       token ? token : "");
		return -1;
	}
	if (token == NULL || keyauth == NULL || !token_ok(token) ||
	    strlen(keyauth) >= sizeof bs->h01[0].keyauth) {
		fg_err(h->component, NULL, "refusing to publish a malformed http-01 token");
		return -1;
	}
	pthread_mutex_lock(&bs->h01_lock);
	size_t i;
	for (i = 0; i < bs->nh01 && strcmp(bs->h01[i].token, token) != 0; i++)
		;
	if (i == bs->nh01) {
		if (bs->nh01 == bs->caph01) {
			size_t nc = bs->caph01 ? bs->caph01 * 2 : 16;
			struct http01 *nv = nc <= HTTP01_MAX ? realloc(bs->h01, nc * sizeof *nv) : NULL;
			if (nv == NULL) {
				fg_err(h->component, NULL, "too many http-01 tokens published at once (%zu)", bs->nh01);
				goto out;
			}
			bs->h01 = nv;
			bs->caph01 = nc;
		}
		bs->nh01++;
	}
	fg_strlcpy(bs->h01[i].token, token, sizeof bs->h01[i].token);
	fg_strlcpy(bs->h01[i].keyauth, keyauth, sizeof bs->h01[i].keyauth);
	rc = 0;
out:
	pthread_mutex_unlock(&bs->h01_lock);
	if (rc == 0)
		fg_debug(h->component, NULL, "serving http-01 token %s", token);
	return rc;
}

static void h_http01_withdraw(void *ctx, const char *token)
{
	struct host_ctx *h = ctx;
	struct backends *bs = h->bs;

	if (token == NULL)
		return;
	pthread_mutex_lock(&bs->h01_lock);
	for (size_t i = 0; i < bs->nh01; i++) {
		if (strcmp(bs->h01[i].token, token) == 0) {
			bs->h01[i] = bs->h01[--bs->nh01];
			fg_debug(h->component, NULL, "no longer serving http-01 token %s", token);
			break;
		}
	}
	pthread_mutex_unlock(&bs->h01_lock);
}

int backends_job_claim(struct backends *bs, const char *curve_key, const char *request_id)
{
	char *id = NULL;
	int rc = -1;

	if (asprintf(&id, "%s %s", curve_key, request_id) < 0)
		return -1;
	pthread_mutex_lock(&bs->h01_lock);
	for (size_t i = 0; i < bs->nbusy; i++) {
		if (strcmp(bs->busy[i], id) == 0) {
			rc = 0;
			goto out;
		}
	}
	if (bs->nbusy == bs->capbusy) {
		size_t nc = bs->capbusy ? bs->capbusy * 2 : 16;
		char **nv = realloc(bs->busy, nc * sizeof *nv);
		if (nv == NULL)
			goto out;
		bs->busy = nv;
		bs->capbusy = nc;
	}
	bs->busy[bs->nbusy++] = id;
	id = NULL;
	rc = 1;
out:
	pthread_mutex_unlock(&bs->h01_lock);
	free(id);
	return rc;
}

void backends_job_release(struct backends *bs, const char *curve_key, const char *request_id)
{
	size_t kl = strlen(curve_key);

	pthread_mutex_lock(&bs->h01_lock);
	for (size_t i = 0; i < bs->nbusy; i++) {
		const char *b = bs->busy[i];
		if (strncmp(b, curve_key, kl) == 0 && b[kl] == ' ' && strcmp(b + kl + 1, request_id) == 0) {
			free(bs->busy[i]);
			bs->busy[i] = bs->busy[--bs->nbusy];
			break;
		}
	}
	pthread_mutex_unlock(&bs->h01_lock);
}

int backends_http01_get(struct backends *bs, const char *token, char *out, size_t outlen)
{
	int found = 0;

	if (bs == NULL || token == NULL)
		return 0;
	pthread_mutex_lock(&bs->h01_lock);
	for (size_t i = 0; i < bs->nh01 && !found; i++) {
		if (strcmp(bs->h01[i].token, token) == 0) {
			fg_strlcpy(out, bs->h01[i].keyauth, outlen);
			found = 1;
		}
	}
	pthread_mutex_unlock(&bs->h01_lock);
	return found;
}

/* Append path to the comma-separated list of places tried. */
static void tried_add(char *list, size_t size, const char *path)
{
	size_t used = strlen(list);

	if (used > 0 && used + 2 < size) {
		memcpy(list + used, ", ", 3);
		used += 2;
	}
	if (used < size)
		fg_strlcpy(list + used, path, size - used);
}

/* Is the candidate path readable? Records it in tried when not (or when
 * snprintf truncated it, n being snprintf's return). */
static int try_path(const char *cand, int n, size_t candlen, char *tried, size_t triedlen)
{
	if (n > 0 && (size_t)n < candlen && access(cand, R_OK) == 0)
		return 1;
	tried_add(tried, triedlen, cand);
	return 0;
}

/* See backend.h. A directory the operator named (plugin_dir in the config,
 * else $FLEETGATE_PLUGIN_DIR) is the only place looked at: a plugin missing
 * there is an error, never silently replaced by another copy. Without one,
 * the build tree next to the running executable comes first (so a build
 * runs its own plugins), then the plugin directory of the installed tree
 * the executable belongs to (PREFIX/sbin/../LIBDIR/fleetgate, so a tree
 * installed under a DESTDIR runs its own plugins), then FG_PLUGIN_DIR. */
int backend_plugin_path(const char *plugin_dir, const char *name, char *out, size_t outlen,
			char *err, size_t errlen)
{
	char tried[2048] = "", exe[PATH_MAX], cand[PATH_MAX];
	const char *env = getenv("FLEETGATE_PLUGIN_DIR");
	const char *named = NULL, *how = NULL;
	int n;

	if (name == NULL || name[0] == '\0' || strchr(name, '/') != NULL || strcmp(name, "..") == 0) {
		fg_seterr(err, errlen, "plugin name '%s' is not a plain name; use e.g. \"local\"",
			  name ? name : "");
		return -1;
	}
	if (plugin_dir != NULL && plugin_dir[0] != '\0') {
		named = plugin_dir;
		how = "plugin_dir in fleetgated.conf";
	} else if (env != NULL && env[0] != '\0') {
		named = env;
		how = "FLEETGATE_PLUGIN_DIR";
	}
	if (named != NULL) {
		n = snprintf(cand, sizeof cand, "%s/fleetgate-%s.so", named, name);
		if (try_path(cand, n, sizeof cand, tried, sizeof tried))
			goto found;
		fg_seterr(err, errlen, "plugin '%s' not found: %s is not readable (set by %s); install the plugin there or change %s",
			  name, tried, how, how);
		return -1;
	}
	ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
	char *slash = NULL;
	if (len > 0) {
		exe[len] = '\0';
		slash = strrchr(exe, '/');
	}
	if (slash != NULL) {
		*slash = '\0';
		n = snprintf(cand, sizeof cand, "%s/../plugins/%s/fleetgate-%s.so", exe, name, name);
		if (try_path(cand, n, sizeof cand, tried, sizeof tried))
			goto found;
		/* Installed: bin/ and sbin/ sit one level below the prefix, so an
		 * installed tree finds its own plugins wherever it was put. */
		if (FG_PLUGIN_DIR_REL[0] != '\0') {
			n = snprintf(cand, sizeof cand, "%s/../%s/fleetgate-%s.so", exe, FG_PLUGIN_DIR_REL, name);
			if (try_path(cand, n, sizeof cand, tried, sizeof tried))
				goto found;
		}
	}
	n = snprintf(cand, sizeof cand, "%s/fleetgate-%s.so", FG_PLUGIN_DIR, name);
	if (try_path(cand, n, sizeof cand, tried, sizeof tried))
		goto found;
	fg_seterr(err, errlen, "plugin '%s' not found (tried %s); set plugin_dir in fleetgated.conf or FLEETGATE_PLUGIN_DIR",
		  name, tried);
	return -1;
found:
	if (realpath(cand, exe) != NULL && strlen(exe) < outlen)
		fg_strlcpy(out, exe, outlen);
	else if (strlen(cand) < outlen)
		fg_strlcpy(out, cand, outlen);
	else {
		fg_seterr(err, errlen, "plugin path %s is too long", cand);
		return -1;
	}
	return 0;
}

/* See backend.h: the checks every ops table passes before use. */
int backend_check_ops(const struct fg_backend_ops *ops, const char *name, const char *path,
		      char *err, size_t errlen)
{
	if (ops == NULL) {
		fg_seterr(err, errlen, "plugin %s at %s returned no ops table; it is broken: rebuild or reinstall it",
			  name, path);
		return -1;
	}
	if (ops->abi_version != FG_PLUGIN_ABI_VERSION) {
		fg_seterr(err, errlen, "plugin %s at %s was built for plugin ABI %u; this %s speaks ABI %d: rebuild or update %s",
			  name, path, ops->abi_version, program_invocation_short_name,
			  FG_PLUGIN_ABI_VERSION,
			  ops->abi_version > FG_PLUGIN_ABI_VERSION ? "fleetgate" : "the plugin");
		return -1;
	}
	if (ops->struct_size < sizeof(struct fg_backend_ops)) {
		fg_seterr(err, errlen, "plugin %s at %s has an ops table of %u bytes, less than the %zu of ABI %d: rebuild it against this fleetgate's plugin.h",
			  name, path, ops->struct_size, sizeof(struct fg_backend_ops),
			  FG_PLUGIN_ABI_VERSION);
		return -1;
	}
	if (ops->open == NULL || ops->issue == NULL || ops->close == NULL) {
		fg_seterr(err, errlen, "plugin %s at %s lacks open, issue or close; it cannot serve as a backend",
			  name, path);
		return -1;
	}
	return 0;
}

/* Load one backend's plugin, check it, lend it a host table and open it
 * with the backend's settings (plus create = "yes" when asked). On failure
 * l may hold a dlopen handle, which backends_free releases. */
static int load_one(struct backends *bs, struct loaded *l, const struct gw_config *cfg,
		    const struct config_backend *cb, int create, char *err, size_t errlen)
{
	char path[PATH_MAX], perr[1024] = "";
	struct fg_kv *kv = NULL;
	fg_backend_entry_fn entry = NULL;
	int rc = -1;

	fg_strlcpy(l->b.name, cb->name, sizeof l->b.name);
	if (backend_plugin_path(cfg->plugin_dir, cb->plugin, path, sizeof path, perr, sizeof perr) != 0) {
		fg_seterr(err, errlen, "backend %s: %s", cb->name, perr);
		return -1;
	}
	dlerror();
	l->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (l->dl == NULL) {
		fg_seterr(err, errlen, "backend %s: cannot load plugin %s: %s", cb->name, path, dlerror());
		return -1;
	}
	/* POSIX: a function pointer is read through its object representation. */
	*(void **)&entry = dlsym(l->dl, FG_BACKEND_SYMBOL);
	if (entry == NULL) {
		fg_seterr(err, errlen, "backend %s: %s is not a fleetgate backend plugin (no %s symbol)",
			  cb->name, path, FG_BACKEND_SYMBOL);
		return -1;
	}
	const struct fg_backend_ops *ops = entry();
	if (backend_check_ops(ops, cb->plugin, path, perr, sizeof perr) != 0) {
		fg_seterr(err, errlen, "backend %s: %s", cb->name, perr);
		return -1;
	}
	l->hctx.bs = bs;
	fg_strlcpy(l->hctx.name, cb->name, sizeof l->hctx.name);
	snprintf(l->hctx.component, sizeof l->hctx.component, "backend:%s", cb->name);
	l->host = (struct fg_host){
		.abi_version = FG_PLUGIN_ABI_VERSION,
		.struct_size = sizeof(struct fg_host),
		.ctx = &l->hctx,
		.log = h_log,
		.now = h_now,
		.random = h_random,
		.state_get = h_state_get,
		.state_put = h_state_put,
		.job_get = h_job_get,
		.job_put = h_job_put,
		.serial_reserve = h_serial_reserve,
		.state_incr = h_state_incr,
		.http01_publish = h_http01_publish,
		.http01_withdraw = h_http01_withdraw,
		.result_size = sizeof(struct fg_issue_result),
		/* Only the local CA's key is in the signer. */
		.sign = bs->sign != NULL && strcmp(cb->plugin, "local") == 0 ? h_sign : NULL,
		/* A confined daemon runs hooks outside its sandbox. */
		.run_hook = confine_hook_runner() ? h_run_hook : NULL,
	};
	size_t n = cb->nsettings;
	kv = calloc(n + 1, sizeof *kv);
	if (kv == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	if (n > 0)
		memcpy(kv, cb->settings, n * sizeof *kv);
	/* create replaces any create the config may carry: only init creates. */
	for (size_t i = 0; i < n;) {
		if (strcmp(kv[i].key, "create") == 0)
			kv[i] = kv[--n];
		else
			i++;
	}
	if (create)
		kv[n++] = (struct fg_kv){ "create", "yes" };
	void *state = NULL;
	if (ops->open(&l->host, kv, n, &state, perr, sizeof perr) != 0) {
		fg_seterr(err, errlen, "backend %s (plugin %s): %s", cb->name, cb->plugin,
			  perr[0] ? perr : "open failed without a message");
		goto out;
	}
	l->b.ops = ops;
	l->b.state = state;
	fg_debug("backend", NULL, "backend %s: plugin %s (%s) from %s", cb->name, ops->name ? ops->name : "?",
		 ops->description ? ops->description : "", path);
	rc = 0;
out:
	free(kv);
	return rc;
}

/* See backend.h. The set's own store connection opens an existing store
 * (create 0): `fleetgate init` creates the store before its backends. */
struct backends *backends_open(const struct gw_config *cfg, int create, char *err, size_t errlen)
{
	return backends_open_signer(cfg, create, NULL, NULL, err, errlen);
}

struct backends *backends_open_signer(const struct gw_config *cfg, int create, backend_sign_fn sign, void *arg,
				      char *err, size_t errlen)
{
	struct backends *bs = calloc(1, sizeof *bs);

	if (bs == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	if (pthread_mutex_init(&bs->lock, NULL) != 0) {
		free(bs);
		fg_seterr(err, errlen, "cannot create a mutex");
		return NULL;
	}
	if (pthread_mutex_init(&bs->h01_lock, NULL) != 0) {
		pthread_mutex_destroy(&bs->lock);
		free(bs);
		fg_seterr(err, errlen, "cannot create a mutex");
		return NULL;
	}
	bs->http_on = cfg->http_listen[0] != '\0';
	bs->sign = sign;
	bs->sign_arg = arg;
	bs->st = store_open(cfg->store_path, 0, err, errlen);
	if (bs->st == NULL)
		goto fail;
	bs->v = calloc(cfg->nbackends ? cfg->nbackends : 1, sizeof *bs->v);
	if (bs->v == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < cfg->nbackends; i++) {
		bs->n = i + 1;
		if (load_one(bs, &bs->v[i], cfg, &cfg->backends[i], create, err, errlen) != 0)
			goto fail;
	}
	return bs;
fail:
	backends_free(bs);
	return NULL;
}

/* Close every plugin instance first (they may still use the store), then
 * unload the modules, then the store. */
void backends_free(struct backends *bs)
{
	if (bs == NULL)
		return;
	for (size_t i = 0; i < bs->n; i++) {
		struct loaded *l = &bs->v[i];
		if (l->b.ops != NULL && l->b.state != NULL)
			l->b.ops->close(l->b.state);
		l->b.state = NULL;
	}
	for (size_t i = 0; i < bs->n; i++)
		if (bs->v[i].dl != NULL)
			dlclose(bs->v[i].dl);
	free(bs->v);
	store_free(bs->st);
	pthread_mutex_destroy(&bs->lock);
	pthread_mutex_destroy(&bs->h01_lock);
	free(bs->h01);
	for (size_t i = 0; i < bs->nbusy; i++)
		free(bs->busy[i]);
	free(bs->busy);
	free(bs);
}

struct backend *backends_find(struct backends *bs, const char *name)
{
	for (size_t i = 0; bs != NULL && name != NULL && i < bs->n; i++)
		if (bs->v[i].b.ops != NULL && strcmp(bs->v[i].b.name, name) == 0)
			return &bs->v[i].b;
	return NULL;
}
