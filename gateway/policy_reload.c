/*
 * policy_reload: inotify watch, validation and generation counter for the
 * hot reload of the policy. See policy_reload.h.
 */
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "fg_log.h"
#include "fg_util.h"
#include "policy_fixtures.h"
#include "policy_reload.h"
#include "store.h"
#include "stats.h"

#define RELOAD_DEBOUNCE_NS (200ull * 1000 * 1000)   /* quiet time after the last change */
#define RELOAD_MAX_WAIT_NS (1000ull * 1000 * 1000)  /* at most this long after the first */

struct policy_reload {
	char path[PATH_MAX];
	char name[NAME_MAX + 1];     /* base name: what inotify reports */
	struct policy_limits lim;
	int fd;                      /* inotify, or -1 */
	uint64_t first_ns;           /* first change of a pending burst; 0 = none */
	uint64_t due_ns;             /* when the pending reload runs */

	pthread_mutex_t lock;        /* guards text, len, gen's pairing with them */
	char *text;                  /* the validated source of generation gen */
	size_t len;
	_Atomic uint64_t gen;
	struct store *st;            /* for the audit records of reloads, or NULL */
};

int policy_reload_audit_to(struct policy_reload *pr, const char *store_path, char *err,
			   size_t errlen)
{
	pr->st = store_open(store_path, 0, err, errlen);
	return pr->st ? 0 : -1;
}

/* One audit record of a reload attempt; failures are logged, not fatal. */
static void reload_audit(struct policy_reload *pr, const char *kind, json_t *detail)
{
	char err[512];
	char *text = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
	if (pr->st != NULL && text != NULL &&
	    store_audit(pr->st, kind, NULL, NULL, text, fg_now(), err, sizeof err) != 0)
		fg_err("policy", NULL, "cannot record the %s audit record: %s", kind, err);
	free(text);
	json_decref(detail);
}

struct policy_reload *policy_reload_new(const char *path, const struct policy_limits *lim,
					char *err, size_t errlen)
{
	struct policy_reload *pr = calloc(1, sizeof *pr);
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (pr == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&pr->lock, NULL);
	atomic_init(&pr->gen, 0);
	fg_strlcpy(pr->path, path, sizeof pr->path);
	fg_strlcpy(pr->name, slash ? slash + 1 : path, sizeof pr->name);
	if (lim)
		pr->lim = *lim;
	if (slash == NULL)
		fg_strlcpy(dir, ".", sizeof dir);
	else if (slash == path)
		fg_strlcpy(dir, "/", sizeof dir);
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);

	pr->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (pr->fd < 0) {
		fg_warn("policy", NULL, "cannot watch %s for changes (inotify: %s); reload the policy "
			"with SIGHUP instead", path, strerror(errno));
	} else if (inotify_add_watch(pr->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
		fg_warn("policy", NULL, "cannot watch %s for changes (inotify on %s: %s); reload the "
			"policy with SIGHUP instead", path, dir, strerror(errno));
		close(pr->fd);
		pr->fd = -1;
	}
	return pr;
}

void policy_reload_free(struct policy_reload *pr)
{
	if (pr == NULL)
		return;
	if (pr->fd >= 0)
		close(pr->fd);
	pthread_mutex_destroy(&pr->lock);
	store_free(pr->st);
	free(pr->text);
	free(pr);
}

int policy_reload_fd(const struct policy_reload *pr)
{
	return pr->fd;
}

/* Drain the inotify queue. Events for other files in the directory (the
 * store, keys) are ignored; a queue overflow may have hidden ours, so it
 * counts as a change. */
void policy_reload_on_event(struct policy_reload *pr)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int changed = 0;

	for (;;) {
		ssize_t n = read(pr->fd, buf, sizeof buf);
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			if (ev->mask & IN_Q_OVERFLOW)
				changed = 1;
			else if (ev->len > 0 && strcmp(ev->name, pr->name) == 0)
				changed = 1;
			else if (ev->mask & IN_IGNORED)
				fg_warn("policy", NULL, "the directory of %s is no longer watched (removed or "
					"unmounted); reload the policy with SIGHUP", pr->path);
			p += sizeof *ev + ev->len;
		}
	}
	if (!changed)
		return;
	uint64_t now = fg_mono_ns();
	if (pr->first_ns == 0)
		pr->first_ns = now;
	pr->due_ns = now + RELOAD_DEBOUNCE_NS;
	if (pr->due_ns > pr->first_ns + RELOAD_MAX_WAIT_NS)
		pr->due_ns = pr->first_ns + RELOAD_MAX_WAIT_NS;
}

long policy_reload_timeout_ms(const struct policy_reload *pr)
{
	uint64_t now;

	if (pr->first_ns == 0)
		return -1;
	now = fg_mono_ns();
	if (now >= pr->due_ns)
		return 0;
	return (long)((pr->due_ns - now + 999999) / 1000000);
}

void policy_reload_tick(struct policy_reload *pr)
{
	if (pr->first_ns == 0 || fg_mono_ns() < pr->due_ns)
		return;
	policy_reload_now(pr, "file changed");
}

/* XXX: validation runs on the main thread, so the ROUTER waits while a
 * policy compiles and its fixtures run (milliseconds for real policies;
 * each fixture is bounded by the instruction cap). A validator thread is
 * owed if fixture files grow large. */
int policy_reload_now(struct policy_reload *pr, const char *why)
{
	char err[2048] = "";
	char *text = NULL;
	size_t len = 0, ncases = 0;
	uint64_t gen;

	pr->first_ns = 0;
	pr->due_ns = 0;
	if (policy_read_source(pr->path, &text, &len, err, sizeof err) != 0 ||
	    policy_validate(pr->path, text, len, &pr->lim, &ncases, err, sizeof err) != 0) {
		free(text);
		stats_policy_reload(0);
		reload_audit(pr, "policy.reload_refused",
			     json_pack("{s:s, s:s, s:s}", "file", pr->path, "why", why, "error", err));
		fg_err("policy", NULL, "policy reload refused (%s): %s; generation %llu keeps serving; "
		       "fix the file and save it again", why, err,
		       (unsigned long long)atomic_load(&pr->gen));
		return -1;
	}
	pthread_mutex_lock(&pr->lock);
	free(pr->text);
	pr->text = text;
	pr->len = len;
	gen = atomic_load(&pr->gen) + 1;
	atomic_store(&pr->gen, gen);
	pthread_mutex_unlock(&pr->lock);
	stats_policy_reload(1);
	unsigned char md[32];
	char hex[65];
	SHA256((const unsigned char *)text, len, md);
	fg_hex(md, sizeof md, hex);
	reload_audit(pr, "policy.reload",
		     json_pack("{s:s, s:s, s:I, s:s, s:I}", "file", pr->path, "why", why, "generation",
			       (json_int_t)gen, "sha256", hex, "fixtures", (json_int_t)ncases));
	if (ncases > 0)
		fg_info("policy", NULL, "policy reloaded (generation %llu) from %s (%s; %zu fixtures passed)",
			(unsigned long long)gen, pr->path, why, ncases);
	else
		fg_info("policy", NULL, "policy reloaded (generation %llu) from %s (%s; no fixtures file)",
			(unsigned long long)gen, pr->path, why);
	return 0;
}

uint64_t policy_reload_generation(const struct policy_reload *pr)
{
	return atomic_load_explicit(&((struct policy_reload *)pr)->gen, memory_order_acquire);
}

struct policy *policy_reload_compile(struct policy_reload *pr, uint64_t *gen, char *err,
				     size_t errlen)
{
	char *copy = NULL;
	size_t len;
	struct policy *p;

	pthread_mutex_lock(&pr->lock);
	*gen = atomic_load(&pr->gen);
	len = pr->len;
	if (pr->text != NULL) {
		copy = malloc(len + 1);
		if (copy != NULL)
			memcpy(copy, pr->text, len + 1);
	}
	pthread_mutex_unlock(&pr->lock);
	if (copy == NULL) {
		fg_seterr(err, errlen, pr->text == NULL && *gen == 0 ? "no policy was reloaded yet"
			  : "out of memory copying the policy source");
		return NULL;
	}
	p = policy_new_text(pr->name, copy, len, &pr->lim, err, errlen);
	free(copy);
	return p;
}
