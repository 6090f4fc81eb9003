/*
 * bench_est.c: the EST phase of fleetgate-bench (see bench_est.h).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "bench_est.h"
#include "fg_util.h"
#include "fg_x509.h"

#define EST_KEYS 16                  /* P-256 keys behind the pool's CSRs */
#define EST_TIMEOUT_S 30             /* one request, from connect to answer */

struct est_shared {
	const char *url;
	const char *cafile;
	const char *userpwd;
	char **b64;                      /* one base64 CSR per request */
	size_t *b64len;
	long total;
	atomic_long next;
	atomic_long ok;
	atomic_long failed;
	uint64_t *lat;                   /* ns per request */
	pthread_mutex_t lock;
	char first_err[512];
};

struct est_client {
	pthread_t thread;
	struct est_shared *sh;
	int started;
};

struct body {
	char buf[8192];
	size_t len;
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct body *b = arg;
	size_t k = sz * n;
	if (k > sizeof b->buf - 1 - b->len)
		k = sizeof b->buf - 1 - b->len;
	memcpy(b->buf + b->len, p, k);
	b->len += k;
	b->buf[b->len] = '\0';
	return sz * n;
}

static void note_failure(struct est_shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_failure(struct est_shared *sh, const char *fmt, ...)
{
	va_list ap;
	atomic_fetch_add(&sh->failed, 1);
	pthread_mutex_lock(&sh->lock);
	if (sh->first_err[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(sh->first_err, sizeof sh->first_err, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&sh->lock);
}

static void *client_main(void *arg)
{
	struct est_client *c = arg;
	struct est_shared *sh = c->sh;
	CURL *h = curl_easy_init();
	struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/pkcs10");
	char url[512];
	struct body b;

	if (h == NULL || hdr == NULL) {
		note_failure(sh, "out of memory for a libcurl handle");
		goto out;
	}
	snprintf(url, sizeof url, "%s/simpleenroll", sh->url);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CAINFO, sh->cafile);
	curl_easy_setopt(h, CURLOPT_USERPWD, sh->userpwd);
	curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)EST_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	for (;;) {
		long i = atomic_fetch_add(&sh->next, 1);
		if (i >= sh->total)
			break;
		long code = 0;
		b.len = 0;
		b.buf[0] = '\0';
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, sh->b64[i]);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)sh->b64len[i]);
		uint64_t t0 = fg_mono_ns();
		CURLcode rc = curl_easy_perform(h);
		sh->lat[i] = fg_mono_ns() - t0;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
		if (rc != CURLE_OK)
			note_failure(sh, "request %ld: %s", i, curl_easy_strerror(rc));
		else if (code != 200 || b.len < 100)
			note_failure(sh, "request %ld: HTTP %ld: %.300s", i, code, b.buf);
		else
			atomic_fetch_add(&sh->ok, 1);
	}
out:
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	return NULL;
}

static double proc_cpu(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long ut = 0, st = 0;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return a < b ? -1 : a > b;
}

static double pct_ms(const uint64_t *v, long n, double q)
{
	if (n <= 0)
		return 0;
	long i = (long)(q * (double)(n - 1) + 0.5);
	return (double)v[i] / 1e6;
}

/* One CSR per request, CN and DNS SAN bench-est-<i> (what the default
 * policy decides for it), from EST_KEYS keys, base64 (no line breaks). */
static int pool_make(struct est_shared *sh, char *err, size_t errlen)
{
	EVP_PKEY *keys[EST_KEYS] = { 0 };
	int rc = -1;

	sh->b64 = calloc((size_t)sh->total, sizeof *sh->b64);
	sh->b64len = calloc((size_t)sh->total, sizeof *sh->b64len);
	if (sh->b64 == NULL || sh->b64len == NULL) {
		fg_seterr(err, errlen, "out of memory for %ld CSRs", sh->total);
		goto out;
	}
	for (int k = 0; k < EST_KEYS; k++)
		if ((keys[k] = fg_key_generate(FG_KEY_P256, err, errlen)) == NULL)
			goto out;
	for (long i = 0; i < sh->total; i++) {
		char name[48];
		const char *dns[1] = { name };
		unsigned char *der = NULL;
		size_t len = 0;
		snprintf(name, sizeof name, "bench-est-%ld", i);
		if (fg_csr_build(keys[i % EST_KEYS], name, dns, 1, &der, &len, err, errlen) != 0)
			goto out;
		sh->b64[i] = malloc(4 * ((len + 2) / 3) + 1);
		if (sh->b64[i] == NULL) {
			free(der);
			fg_seterr(err, errlen, "out of memory");
			goto out;
		}
		sh->b64len[i] = (size_t)EVP_EncodeBlock((unsigned char *)sh->b64[i], der, (int)len);
		free(der);
	}
	rc = 0;
out:
	for (int k = 0; k < EST_KEYS; k++)
		EVP_PKEY_free(keys[k]);
	return rc;
}

int est_bench_run(const char *url, const char *cafile, const char *token, int clients,
		  long requests, pid_t gw_pid, struct est_bench_results *r, char *err,
		  size_t errlen)
{
	struct est_shared sh;
	struct est_client *cl = NULL;
	char userpwd[128];
	int rc = -1;

	memset(&sh, 0, sizeof sh);
	memset(r, 0, sizeof *r);
	pthread_mutex_init(&sh.lock, NULL);
	snprintf(userpwd, sizeof userpwd, "bench:%s", token);
	sh.url = url;
	sh.cafile = cafile;
	sh.userpwd = userpwd;
	sh.total = requests;
	r->requests = requests;
	r->clients = clients;
	uint64_t p0 = fg_mono_ns();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fg_seterr(err, errlen, "libcurl does not initialise");
		goto out;
	}
	if (pool_make(&sh, err, errlen) != 0)
		goto out;
	r->prep_s = (double)(fg_mono_ns() - p0) / 1e9;
	sh.lat = calloc((size_t)requests, sizeof *sh.lat);
	cl = calloc((size_t)clients, sizeof *cl);
	if (sh.lat == NULL || cl == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	double cpu0 = proc_cpu(gw_pid);
	uint64_t t0 = fg_mono_ns();
	for (int i = 0; i < clients; i++) {
		cl[i].sh = &sh;
		if (pthread_create(&cl[i].thread, NULL, client_main, &cl[i]) != 0) {
			note_failure(&sh, "cannot start EST client thread %d", i);
			break;
		}
		cl[i].started = 1;
	}
	for (int i = 0; i < clients; i++)
		if (cl[i].started)
			pthread_join(cl[i].thread, NULL);
	r->wall_s = (double)(fg_mono_ns() - t0) / 1e9;
	r->gw_cpu_s = proc_cpu(gw_pid) - cpu0;
	r->ok = atomic_load(&sh.ok);
	r->failed = requests - r->ok;
	r->rate = r->wall_s > 0 ? (double)r->ok / r->wall_s : 0;
	r->gw_cpu_per = r->ok > 0 ? r->gw_cpu_s / (double)r->ok : 0;
	qsort(sh.lat, (size_t)requests, sizeof *sh.lat, cmp_u64);
	r->p50_ms = pct_ms(sh.lat, requests, 0.50);
	r->p90_ms = pct_ms(sh.lat, requests, 0.90);
	r->p99_ms = pct_ms(sh.lat, requests, 0.99);
	r->max_ms = pct_ms(sh.lat, requests, 1.0);
	fg_strlcpy(r->first_err, sh.first_err, sizeof r->first_err);
	rc = 0;
out:
	if (sh.b64)
		for (long i = 0; i < requests; i++)
			free(sh.b64[i]);
	free(sh.b64);
	free(sh.b64len);
	free(sh.lat);
	free(cl);
	OPENSSL_cleanse(userpwd, sizeof userpwd);
	pthread_mutex_destroy(&sh.lock);
	curl_global_cleanup();
	return rc;
}
