/*
 * backend.c: plugin loading and host services (see backend.h).
 */
#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "fg_log.h"
#include "fg_util.h"

/* What a host context knows: which backend it serves, and the set's own
 * store connection for plugin-wide state. */
struct host_ctx {
	struct backends *bs;
	char name[64];
};

struct loaded {
	struct backend b;
	void *dl;
	struct fg_host host;
	struct host_ctx hctx;
};

struct backends {
	struct loaded *v;
	size_t n;
	struct store *st;          /* plugin-wide state and serials */
	pthread_mutex_t lock;      /* guards st */
};

static void h_log(void *ctx, enum fg_level level, const char *request_id, const char *msg)
{
	struct host_ctx *h = ctx;
	char comp[80];
	snprintf(comp, sizeof comp, "backend:%s", h->name);
	fg_log(level < FG_LEVEL_MAX ? (enum fg_log_level)level : FG_LOG_INFO, comp, request_id, "%s", msg);
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
		fg_err("backend", NULL, "%s", err);
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
		fg_err("backend", NULL, "%s", err);
	return r;
}

static int h_job_get(struct fg_job *job, const char *key, unsigned char **val, size_t *len)
{
	char err[512];
	int r = store_job_state_get(job->st, job->curve_key, job->request_id, key, val, len, err,
				    sizeof err);
	if (r < 0)
		fg_err("backend", job->request_id, "%s", err);
	return r;
}

static int h_job_put(struct fg_job *job, const char *key, const unsigned char *val, size_t len)
{
	char err[512];
	int r = store_job_state_put(job->st, job->curve_key, job->request_id, key, val, len, err,
				    sizeof err);
	if (r < 0)
		fg_err("backend", job->request_id, "%s", err);
	return r;
}

static int h_serial_reserve(void *ctx, const char *serial_hex)
{
	struct host_ctx *h = ctx;
	char err[512];
	pthread_mutex_lock(&h->bs->lock);
	int r = store_serial_reserve(h->bs->st, h->name, serial_hex, fg_now(), err, sizeof err);
	pthread_mutex_unlock(&h->bs->lock);
	if (r < 0)
		fg_err("backend", NULL, "%s", err);
	return r;
}

/* Add one tried path to a comma-separated list, truncating quietly. */
static void tried_add(char *list, size_t size, const char *path)
{
	size_t used = strlen(list);
	if (used && used + 2 < size) {
		memcpy(list + used, ", ", 3);
		used += 2;
	}
	if (used < size)
		fg_strlcpy(list + used, path, size - used);
}

static int readable(const char *p)
{
	return access(p, R_OK) == 0;
}

int backend_plugin_path(const char *plugin_dir, const char *name, char *out, size_t outlen,
			char *err, size_t errlen)
{
	char tried[2048] = "", exe[PATH_MAX], cand[PATH_MAX];
	const char *env = getenv("FLEETGATE_PLUGIN_DIR");
	const char *dirs[3] = { plugin_dir && *plugin_dir ? plugin_dir : NULL, env && *env ? env : NULL,
				NULL };

	for (int i = 0; i < 2; i++) {
		if (dirs[i] == NULL)
			continue;
		snprintf(cand, sizeof cand, "%s/fleetgate-%s.so", dirs[i], name);
		if (readable(cand))
			goto found;
		tried_add(tried, sizeof tried, cand);
	}
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = '\0';
		snprintf(cand, sizeof cand, "%s/../plugins/%s/fleetgate-%s.so", dirname(exe), name, name);
		if (readable(cand))
			goto found;
		tried_add(tried, sizeof tried, cand);
	}
	snprintf(cand, sizeof cand, "%s/fleetgate-%s.so", FG_PLUGIN_DIR, name);
	if (readable(cand))
		goto found;
	tried_add(tried, sizeof tried, cand);
	fg_seterr(err, errlen, "plugin '%s' not found (tried %s); set plugin_dir in fleetgated.conf or FLEETGATE_PLUGIN_DIR",
		  name, tried);
	return -1;
found:
	if (realpath(cand, out) == NULL || strlen(out) >= outlen)
		fg_strlcpy(out, cand, outlen);
	return 0;
}

/* Load one backend's plugin and open it. */
static int load_one(struct backends *bs, struct loaded *l, const struct gw_config *cfg,
		    const struct config_backend *cb, int create, char *err, size_t errlen)
{
	char path[PATH_MAX], perr[1024] = "";
	struct fg_kv *kv = NULL;
	int rc = -1;

	fg_strlcpy(l->b.name, cb->name, sizeof l->b.name);
	if (backend_plugin_path(cfg->plugin_dir, cb->plugin, path, sizeof path, err, errlen) != 0)
		return -1;
	l->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (l->dl == NULL) {
		fg_seterr(err, errlen, "backend %s: cannot load plugin %s: %s", cb->name, path, dlerror());
		return -1;
	}
	fg_backend_entry_fn entry;
	*(void **)&entry = dlsym(l->dl, FG_BACKEND_SYMBOL);
	if (entry == NULL) {
		fg_seterr(err, errlen, "backend %s: %s is not a fleetgate backend plugin (no %s symbol)",
			  cb->name, path, FG_BACKEND_SYMBOL);
		return -1;
	}
	const struct fg_backend_ops *ops = entry();
	if (ops == NULL || ops->abi_version != FG_PLUGIN_ABI_VERSION) {
		fg_seterr(err, errlen, "backend %s: plugin %s was built for plugin ABI %u; this fleetgate speaks ABI %d: rebuild or update the plugin",
			  cb->name, path, ops ? ops->abi_version : 0, FG_PLUGIN_ABI_VERSION);
		return -1;
	}
	if (ops->struct_size < offsetof(struct fg_backend_ops, close) + sizeof ops->close ||
	    ops->open == NULL || ops->issue == NULL) {
		fg_seterr(err, errlen, "backend %s: plugin %s has an incomplete ops table (struct_size %u)",
			  cb->name, path, ops->struct_size);
		return -1;
	}
	l->b.ops = ops;
	l->hctx.bs = bs;
	fg_strlcpy(l->hctx.name, cb->name, sizeof l->hctx.name);
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
	};
	size_t n = cb->nsettings;
	kv = calloc(n + 1, sizeof *kv);
	if (kv == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	memcpy(kv, cb->settings, n * sizeof *kv);
	if (create)
		kv[n++] = (struct fg_kv){ "create", "yes" };
	if (ops->open(&l->host, kv, n, &l->b.state, perr, sizeof perr) != 0) {
		fg_seterr(err, errlen, "backend %s (plugin %s): %s", cb->name, ops->name, perr);
		goto out;
	}
	rc = 0;
out:
	free(kv);
	return rc;
}

struct backends *backends_open(const struct gw_config *cfg, int create, char *err, size_t errlen)
{
	struct backends *bs = calloc(1, sizeof *bs);
	if (bs == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&bs->lock, NULL);
	bs->st = store_open(cfg->store_path, create, err, errlen);
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

void backends_free(struct backends *bs)
{
	if (bs == NULL)
		return;
	for (size_t i = 0; i < bs->n; i++) {
		struct loaded *l = &bs->v[i];
		if (l->b.ops && l->b.ops->close && l->b.state)
			l->b.ops->close(l->b.state);
		if (l->dl)
			dlclose(l->dl);
	}
	free(bs->v);
	store_free(bs->st);
	pthread_mutex_destroy(&bs->lock);
	free(bs);
}

struct backend *backends_find(struct backends *bs, const char *name)
{
	for (size_t i = 0; bs && name && i < bs->n; i++)
		if (bs->v[i].b.ops && strcmp(bs->v[i].b.name, name) == 0)
			return &bs->v[i].b;
	return NULL;
}
