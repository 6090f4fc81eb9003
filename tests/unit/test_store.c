/*
 * Unit tests for the SQLite store: migrations, tokens consumed atomically
 * (twenty threads racing for one use), admission refusals that write
 * nothing, jobs, certificates, revocation and the audit hash chain (altered,
 * relinked and removed records are found), group commit (sixteen threads
 * sharing commits, failures undoing only their own writes). Each test gets a fresh store in
 * its own temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fg_util.h"
#include "store.h"

#define KEY1 "KEY1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define KEY2 "KEY2xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define NRACERS 20

struct fixture {
	char dir[64];
	char path[128];
	struct store *st;
};

static int setup(void **state)
{
	char err[512];
	struct fixture *f = calloc(1, sizeof *f);
	if (f == NULL)
		return -1;
	strcpy(f->dir, "/tmp/fg-store.XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
	f->st = store_open(f->path, 1, err, sizeof err);
	if (f->st == NULL) {
		fprintf(stderr, "%s\n", err);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	store_free(f->st);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
	int rc = system(cmd) == 0 ? 0 : -1;
	free(f);
	return rc;
}

/* One integer from a query on a separate raw connection (what another
 * process would see). */
static long long q(const struct fixture *f, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	long long n = -1;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return n;
}

/* One text value (copied into buf) from a raw query. */
static const char *qs(const struct fixture *f, const char *sql, char *buf, size_t n)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	buf[0] = '\0';
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) != NULL)
		fg_strlcpy(buf, (const char *)sqlite3_column_text(s, 0), n);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return buf;
}

static void raw(const struct fixture *f, const char *sql)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

/* Everything an admission may write, to prove a refusal wrote nothing. */
struct snap {
	long long devices, jobs, audit, uses;
};

static struct snap snap(const struct fixture *f)
{
	struct snap s = {
		q(f, "SELECT count(*) FROM devices"),
		q(f, "SELECT count(*) FROM jobs"),
		q(f, "SELECT count(*) FROM audit"),
		q(f, "SELECT coalesce(sum(uses_left), 0) FROM tokens"),
	};
	return s;
}

static void assert_unchanged(const struct fixture *f, struct snap before)
{
	struct snap now = snap(f);
	assert_int_equal(now.devices, before.devices);
	assert_int_equal(now.jobs, before.jobs);
	assert_int_equal(now.audit, before.audit);
	assert_int_equal(now.uses, before.uses);
}

static void admit(struct store_admit *a, const char *rid, const char *key, const char *hash,
		  const char *dev, int create)
{
	memset(a, 0, sizeof *a);
	a->request_id = rid;
	a->curve_key = key;
	a->kind = "enroll";
	a->slot = "default";
	a->backend = "local";
	a->params_json = "{\"csr\":\"x\"}";
	a->token_hash = hash;
	a->device_id = dev;
	a->create_device = create;
	a->group = "laptops";
	a->hostname = "host1";
	a->facts_json = "{\"os\":\"linux\"}";
	a->now = fg_now();
}

static void add_token(struct fixture *f, const char *hash, int uses, int64_t expires_at,
		      char id[24])
{
	char err[512];
	assert_int_equal(store_token_add(f->st, hash, "laptops", uses, expires_at, fg_now(), id, err,
					 sizeof err), 0);
}

/* Enroll dev_1 on KEY1 with a fresh one-use token. */
static void enroll_one(struct fixture *f)
{
	char err[512], id[24];
	struct store_admit a;
	add_token(f, "h-enroll", 1, fg_now() + 3600, id);
	admit(&a, "rid-good0001", KEY1, "h-enroll", "dev_1", 1);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
}

static void test_open_migrate_reopen(void **state)
{
	struct fixture *f = *state;
	char err[512], want[256], path[160];

	assert_int_equal(store_schema_version(f->st), 3);
	assert_int_equal(q(f, "SELECT count(*) FROM schema_migrations"), 3);
	assert_int_equal(q(f, "SELECT count(*) FROM commands"), 0);
	assert_int_equal(q(f, "SELECT count(*) FROM devices WHERE serial = ''"), 0);
	char mode[16];
	assert_string_equal(qs(f, "PRAGMA journal_mode", mode, sizeof mode), "wal");
	store_free(f->st);

	/* reopening applies nothing again */
	f->st = store_open(f->path, 0, err, sizeof err);
	assert_non_null(f->st);
	assert_int_equal(store_schema_version(f->st), 3);
	assert_int_equal(q(f, "SELECT count(*) FROM schema_migrations"), 3);
	store_free(f->st);
	f->st = NULL;

	/* a store from a newer fleetgate is refused, saying so */
	raw(f, "INSERT INTO schema_migrations VALUES (999, 0)");
	assert_null(store_open(f->path, 0, err, sizeof err));
	assert_non_null(strstr(err, "schema version 999, newer than this fleetgate knows"));
	raw(f, "DELETE FROM schema_migrations WHERE version = 999");

	/* no store without create */
	snprintf(path, sizeof path, "%s/missing.db", f->dir);
	assert_null(store_open(path, 0, err, sizeof err));
	snprintf(want, sizeof want, "no store at %s; run `fleetgate init --state DIR` first", path);
	assert_string_equal(err, want);
	/* and a directory that does not exist is named */
	snprintf(path, sizeof path, "%s/no/such/dir.db", f->dir);
	assert_null(store_open(path, 1, err, sizeof err));
	assert_non_null(strstr(err, path));

	f->st = store_open(f->path, 0, err, sizeof err);
	assert_non_null(f->st);
}

static void test_tokens(void **state)
{
	struct fixture *f = *state;
	char err[512], id[24];
	struct store_token t;
	int64_t now = fg_now();

	assert_int_equal(store_token_add(f->st, "h-live", "laptops", 3, now + 3600, now, id, err,
					 sizeof err), 0);
	assert_int_equal(strncmp(id, "tok_", 4), 0);
	assert_int_equal(strlen(id), 20);
	assert_int_equal(store_token_lookup(f->st, "h-live", &t, err, sizeof err), 1);
	assert_string_equal(t.id, id);
	assert_string_equal(t.group, "laptops");
	assert_int_equal(t.uses_left, 3);
	assert_int_equal(t.expires_at, now + 3600);
	assert_int_equal(t.created_at, now);
	assert_int_equal(t.revoked, 0);
	assert_int_equal(store_token_lookup(f->st, "h-none", &t, err, sizeof err), 0);
	/* the hash is unique */
	assert_int_equal(store_token_add(f->st, "h-live", "x", 1, now + 1, now, id, err, sizeof err), -1);
	assert_non_null(strstr(err, "token insert"));
}

static void test_admit_creates(void **state)
{
	struct fixture *f = *state;
	char err[512], tid[24], buf[256];
	struct store_admit a;
	struct store_device d;
	struct store_job j;

	add_token(f, "h-two", 2, fg_now() + 3600, tid);
	admit(&a, "rid-good0001", KEY1, "h-two", "dev_1", 1);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
	assert_int_equal(q(f, "SELECT uses_left FROM tokens WHERE hash = 'h-two'"), 1);

	assert_int_equal(store_device_by_key(f->st, KEY1, &d, err, sizeof err), 1);
	assert_string_equal(d.id, "dev_1");
	assert_string_equal(d.group, "laptops");
	assert_string_equal(d.hostname, "host1");
	assert_int_equal(d.state, DEVICE_ACTIVE);
	assert_int_equal(d.created_at, a.now);
	assert_string_equal(d.facts_json, "{\"os\":\"linux\"}");
	store_device_clear(&d);
	store_device_clear(&d);   /* a cleared struct clears again */

	assert_int_equal(store_job_get(f->st, KEY1, "rid-good0001", &j, err, sizeof err), 1);
	assert_int_equal(j.state, JOB_ADMITTED);
	assert_string_equal(j.device_id, "dev_1");
	assert_string_equal(j.kind, "enroll");
	assert_string_equal(j.slot, "default");
	assert_string_equal(j.backend, "local");
	assert_string_equal(j.params_json, "{\"csr\":\"x\"}");
	assert_null(j.reply);
	store_job_clear(&j);
	/* request ids are scoped per key */
	assert_int_equal(store_job_get(f->st, KEY2, "rid-good0001", &j, err, sizeof err), 0);

	/* the audit trail, in order, naming the token by id (never its hash) */
	assert_int_equal(q(f, "SELECT count(*) FROM audit"), 3);
	assert_string_equal(qs(f, "SELECT group_concat(kind, ',') FROM (SELECT kind FROM audit ORDER BY seq)",
			       buf, sizeof buf), "token.use,device.create,job.admit");
	snprintf(err, sizeof err, "{\"token\":\"%s\"}", tid);
	assert_string_equal(qs(f, "SELECT detail FROM audit WHERE kind = 'token.use'", buf, sizeof buf), err);
	assert_string_equal(qs(f, "SELECT request_id FROM audit WHERE kind = 'job.admit'", buf, sizeof buf),
			    "rid-good0001");

	/* a renewal: existing device, no token, no device created */
	admit(&a, "rid-renew001", KEY1, NULL, "dev_1", 0);
	a.kind = "renew";
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
	assert_int_equal(q(f, "SELECT count(*) FROM devices"), 1);
	assert_int_equal(q(f, "SELECT uses_left FROM tokens WHERE hash = 'h-two'"), 1);
	assert_int_equal(q(f, "SELECT count(*) FROM audit WHERE kind = 'job.admit'"), 2);
}

static void test_admit_refusals(void **state)
{
	struct fixture *f = *state;
	char err[512], id[24];
	struct store_admit a;
	struct snap before;
	int64_t now = fg_now();

	add_token(f, "h-expired", 5, now - 1, id);
	add_token(f, "h-revoked", 5, now + 3600, id);
	raw(f, "UPDATE tokens SET revoked = 1 WHERE hash = 'h-revoked'");
	add_token(f, "h-used", 1, now + 3600, id);
	add_token(f, "h-many", 10, now + 3600, id);

	admit(&a, "rid-first001", KEY1, "h-used", "dev_1", 1);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);

	const char *bad[] = { "h-expired", "h-revoked", "h-used", "h-unknown" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		before = snap(f);
		admit(&a, "rid-refused1", KEY2, bad[i], "dev_2", 1);
		err[0] = '\0';
		assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), STORE_E_TOKEN);
		assert_non_null(strstr(err, "used up, expired, revoked or unknown"));
		assert_unchanged(f, before);
	}
	assert_int_equal(q(f, "SELECT count(*) FROM devices WHERE id = 'dev_2'"), 0);

	/* the same request id from the same key: duplicate, and the token use
	 * taken earlier in the transaction is given back */
	before = snap(f);
	admit(&a, "rid-first001", KEY1, "h-many", "dev_1", 0);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), STORE_E_DUPLICATE);
	assert_unchanged(f, before);

	/* a key bound to another device */
	before = snap(f);
	admit(&a, "rid-other001", KEY1, "h-many", "dev_9", 1);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), STORE_E_KEY_TAKEN);
	assert_non_null(strstr(err, "already bound"));
	assert_unchanged(f, before);

	/* a device id clash with a new key is an error, not a key conflict */
	before = snap(f);
	admit(&a, "rid-clash001", KEY2, "h-many", "dev_1", 1);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), -1);
	assert_non_null(strstr(err, "device id dev_1 exists already"));
	assert_unchanged(f, before);

	/* the store is still usable after all those rollbacks */
	admit(&a, "rid-ok000001", KEY2, "h-many", "dev_2", 1);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
	assert_int_equal(q(f, "SELECT uses_left FROM tokens WHERE hash = 'h-many'"), 9);
}

struct racer {
	const char *path;
	int index;
	pthread_barrier_t *go;
	int rc;
	char err[512];
};

static void *race(void *arg)
{
	struct racer *r = arg;
	char rid[32], key[48], dev[32];
	struct store_admit a;
	struct store *st = store_open(r->path, 0, r->err, sizeof r->err);
	pthread_barrier_wait(r->go);
	if (st == NULL) {
		r->rc = -1;
		return NULL;
	}
	snprintf(rid, sizeof rid, "rid-race-%04d", r->index);
	snprintf(key, sizeof key, "RACE%036d", r->index);
	snprintf(dev, sizeof dev, "dev_race%d", r->index);
	admit(&a, rid, key, "h-race", dev, 1);
	r->rc = store_job_admit(st, &a, r->err, sizeof r->err);
	store_free(st);
	return NULL;
}

static void test_token_race(void **state)
{
	struct fixture *f = *state;
	char id[24];
	pthread_t th[NRACERS];
	struct racer r[NRACERS];
	pthread_barrier_t go;

	add_token(f, "h-race", 1, fg_now() + 60, id);
	assert_int_equal(pthread_barrier_init(&go, NULL, NRACERS), 0);
	for (int i = 0; i < NRACERS; i++) {
		memset(&r[i], 0, sizeof r[i]);
		r[i].path = f->path;
		r[i].index = i;
		r[i].go = &go;
		assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
	}
	int wins = 0, refused = 0;
	for (int i = 0; i < NRACERS; i++) {
		pthread_join(th[i], NULL);
		if (r[i].rc != 0 && r[i].rc != STORE_E_TOKEN)
			fprintf(stderr, "racer %d: %d %s\n", i, r[i].rc, r[i].err);
		wins += r[i].rc == 0;
		refused += r[i].rc == STORE_E_TOKEN;
	}
	pthread_barrier_destroy(&go);
	assert_int_equal(wins, 1);
	assert_int_equal(refused, NRACERS - 1);
	assert_int_equal(q(f, "SELECT count(*) FROM devices WHERE id LIKE 'dev_race%'"), 1);
	assert_int_equal(q(f, "SELECT count(*) FROM jobs"), 1);
	assert_int_equal(q(f, "SELECT uses_left FROM tokens WHERE hash = 'h-race'"), 0);
	assert_int_equal(q(f, "SELECT count(*) FROM audit WHERE kind = 'token.use'"), 1);
}

#define NDRAWS 25

struct drawer {
	const char *path;
	pthread_barrier_t *go;
	uint64_t got[NDRAWS];
	int rc;
	char err[512];
};

/* Draw NDRAWS numbers from "crl_number" on a connection of its own, as the
 * gateway and the CLI do. */
static void *draw(void *arg)
{
	struct drawer *d = arg;
	struct store *st = store_open(d->path, 0, d->err, sizeof d->err);
	pthread_barrier_wait(d->go);
	if (st == NULL) {
		d->rc = -1;
		return NULL;
	}
	for (int i = 0; i < NDRAWS && d->rc == 0; i++)
		d->rc = store_plugin_state_incr(st, "local", "crl_number", &d->got[i], d->err, sizeof d->err);
	store_free(st);
	return NULL;
}

static void test_state_incr(void **state)
{
	struct fixture *f = *state;
	char err[512];
	uint64_t n = 0, seen[NRACERS * NDRAWS];
	unsigned char *v = NULL;
	size_t vl = 0;

	/* absent counts as 0; an existing value goes on from where it is */
	assert_int_equal(store_plugin_state_incr(f->st, "local", "crl_number", &n, err, sizeof err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_plugin_state_put(f->st, "local", "crl_number", (const unsigned char *)"41", 2,
						err, sizeof err), 0);
	assert_int_equal(store_plugin_state_incr(f->st, "local", "crl_number", &n, err, sizeof err), 0);
	assert_int_equal(n, 42);
	assert_int_equal(store_plugin_state_get(f->st, "local", "crl_number", &v, &vl, err, sizeof err), 1);
	assert_int_equal(vl, 2);
	assert_memory_equal(v, "42", 2);
	free(v);

	/* a damaged counter is refused and left as it was */
	assert_int_equal(store_plugin_state_put(f->st, "other", "crl_number", (const unsigned char *)"4x", 2,
						err, sizeof err), 0);
	assert_int_equal(store_plugin_state_incr(f->st, "other", "crl_number", &n, err, sizeof err), -1);
	assert_non_null(strstr(err, "not a decimal counter"));
	assert_int_equal(store_plugin_state_get(f->st, "other", "crl_number", &v, &vl, err, sizeof err), 1);
	assert_memory_equal(v, "4x", 2);
	free(v);

	/* connections racing each draw distinct numbers, none lost */
	pthread_t th[NRACERS];
	struct drawer d[NRACERS];
	pthread_barrier_t go;
	assert_int_equal(pthread_barrier_init(&go, NULL, NRACERS), 0);
	for (int i = 0; i < NRACERS; i++) {
		memset(&d[i], 0, sizeof d[i]);
		d[i].path = f->path;
		d[i].go = &go;
		assert_int_equal(pthread_create(&th[i], NULL, draw, &d[i]), 0);
	}
	for (int i = 0; i < NRACERS; i++) {
		pthread_join(th[i], NULL);
		if (d[i].rc != 0)
			fprintf(stderr, "drawer %d: %s\n", i, d[i].err);
		assert_int_equal(d[i].rc, 0);
		memcpy(&seen[i * NDRAWS], d[i].got, sizeof d[i].got);
	}
	pthread_barrier_destroy(&go);
	for (int i = 0; i < NRACERS * NDRAWS; i++) {
		assert_true(seen[i] > 42 && seen[i] <= 42 + NRACERS * NDRAWS);
		for (int j = 0; j < i; j++)
			assert_true(seen[i] != seen[j]);
	}
	assert_int_equal(q(f, "SELECT CAST(value AS INTEGER) FROM plugin_state WHERE backend = 'local' AND key = 'crl_number'"),
			 42 + NRACERS * NDRAWS);
}

static void fill_cert(struct store_cert *c, const char *serial, const char *rid, int64_t nb)
{
	memset(c, 0, sizeof *c);
	fg_strlcpy(c->serial_hex, serial, sizeof c->serial_hex);
	strcpy(c->device_id, "dev_1");
	strcpy(c->slot, "default");
	strcpy(c->backend, "local");
	fg_strlcpy(c->request_id, rid, sizeof c->request_id);
	strcpy(c->subject, "CN=host1");
	c->not_before = nb;
	c->not_after = nb + 86400;
	c->der = (unsigned char *)"DER\0!";
	c->der_len = 5;
}

struct collected {
	int n;
	char serials[4][41];
};

static int collect_cert(void *arg, const struct store_cert *c)
{
	struct collected *col = arg;
	if (col->n < 4)
		fg_strlcpy(col->serials[col->n], c->serial_hex, sizeof col->serials[0]);
	col->n++;
	return 0;
}

static void test_job_finish_and_certs(void **state)
{
	struct fixture *f = *state;
	char err[512], buf[256];
	struct store_job j;
	struct store_cert c, got;
	const unsigned char reply[] = { 'r', 0, 'e', 0xff, 'p' };

	enroll_one(f);
	fill_cert(&c, "0A0B", "rid-good0001", 1000);
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-good0001", JOB_DONE, reply, sizeof reply, &c,
					  "cert.issue", "{\"serial\":\"0A0B\"}", err, sizeof err), 0);
	assert_int_equal(store_job_get(f->st, KEY1, "rid-good0001", &j, err, sizeof err), 1);
	assert_int_equal(j.state, JOB_DONE);
	assert_int_equal(j.reply_len, sizeof reply);
	assert_memory_equal(j.reply, reply, sizeof reply);
	store_job_clear(&j);
	assert_string_equal(qs(f, "SELECT device_id FROM audit WHERE kind = 'cert.issue'", buf, sizeof buf),
			    "dev_1");

	assert_int_equal(store_cert_get(f->st, "0A0B", &got, err, sizeof err), 1);
	assert_string_equal(got.device_id, "dev_1");
	assert_string_equal(got.slot, "default");
	assert_string_equal(got.backend, "local");
	assert_string_equal(got.request_id, "rid-good0001");
	assert_string_equal(got.subject, "CN=host1");
	assert_int_equal(got.not_before, 1000);
	assert_int_equal(got.not_after, 1000 + 86400);
	assert_int_equal(got.revoked, 0);
	assert_int_equal(got.der_len, 5);
	assert_memory_equal(got.der, "DER\0!", 5);
	store_cert_clear(&got);
	assert_int_equal(store_cert_get(f->st, "FFFF", &got, err, sizeof err), 0);

	/* a finish retried after a crash is idempotent */
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-good0001", JOB_DONE, reply, sizeof reply, &c,
					  "cert.issue", "{}", err, sizeof err), 0);
	assert_int_equal(q(f, "SELECT count(*) FROM certificates"), 1);
	/* the same serial for another request is refused and nothing changes */
	long long audits = q(f, "SELECT count(*) FROM audit");
	fill_cert(&c, "0A0B", "rid-other999", 1000);
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-other999", JOB_DONE, reply, 1, &c,
					  "cert.issue", "{}", err, sizeof err), -1);
	assert_non_null(strstr(err, "duplicate serial"));
	assert_int_equal(q(f, "SELECT count(*) FROM certificates"), 1);
	assert_int_equal(q(f, "SELECT count(*) FROM audit"), audits);
	/* finishing a job that was never admitted is refused and rolls back the certificate */
	fill_cert(&c, "0C0D", "rid-ghost001", 1000);
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-ghost001", JOB_DONE, reply, 1, &c,
					  "cert.issue", "{}", err, sizeof err), -1);
	assert_non_null(strstr(err, "never admitted"));
	assert_int_equal(q(f, "SELECT count(*) FROM certificates"), 1);
	/* only done and failed are final */
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-good0001", JOB_PENDING, NULL, 0, NULL,
					  NULL, NULL, err, sizeof err), -1);

	/* a second certificate (a renewal), listed in not_before order */
	struct store_admit a;
	admit(&a, "rid-renew001", KEY1, NULL, "dev_1", 0);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
	fill_cert(&c, "0E0F", "rid-renew001", 500);
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-renew001", JOB_DONE, reply, 2, &c,
					  "cert.renew", "{}", err, sizeof err), 0);
	struct collected col = { 0 };
	assert_int_equal(store_cert_list(f->st, "dev_1", collect_cert, &col, err, sizeof err), 0);
	assert_int_equal(col.n, 2);
	assert_string_equal(col.serials[0], "0E0F");
	assert_string_equal(col.serials[1], "0A0B");
	memset(&col, 0, sizeof col);
	assert_int_equal(store_cert_list(f->st, "dev_other", collect_cert, &col, err, sizeof err), 0);
	assert_int_equal(col.n, 0);
	assert_int_equal(store_cert_list(f->st, NULL, collect_cert, &col, err, sizeof err), 0);
	assert_int_equal(col.n, 2);

	/* a failed job stores its reply without a certificate; the audit names the device */
	admit(&a, "rid-fail0001", KEY1, NULL, "dev_1", 0);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-fail0001", JOB_FAILED, reply, 3, NULL,
					  "cert.reject", "CA said no", err, sizeof err), 0);
	assert_int_equal(store_job_get(f->st, KEY1, "rid-fail0001", &j, err, sizeof err), 1);
	assert_int_equal(j.state, JOB_FAILED);
	assert_int_equal(j.reply_len, 3);
	store_job_clear(&j);
	assert_string_equal(qs(f, "SELECT device_id FROM audit WHERE kind = 'cert.reject'", buf, sizeof buf),
			    "dev_1");
}

static int collect_job(void *arg, const struct store_job *j)
{
	struct collected *col = arg;
	if (col->n < 4)
		fg_strlcpy(col->serials[col->n], j->request_id, sizeof col->serials[0]);
	col->n++;
	return 0;
}

static void test_open_jobs(void **state)
{
	struct fixture *f = *state;
	char err[512];
	struct store_admit a;
	struct store_job j;
	struct collected col = { 0 };

	enroll_one(f);   /* rid-good0001, admitted */
	const char *rids[] = { "rid-pend0001", "rid-done0001", "rid-fail0001" };
	for (int i = 0; i < 3; i++) {
		admit(&a, rids[i], KEY1, NULL, "dev_1", 0);
		a.now += i + 1;   /* created_at orders the listing */
		assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
	}
	int64_t next = fg_now() + 300;
	assert_int_equal(store_job_set_pending(f->st, KEY1, "rid-pend0001", next, err, sizeof err), 0);
	assert_int_equal(store_job_get(f->st, KEY1, "rid-pend0001", &j, err, sizeof err), 1);
	assert_int_equal(j.state, JOB_PENDING);
	assert_int_equal(j.next_attempt, next);
	store_job_clear(&j);
	assert_int_equal(store_job_set_pending(f->st, KEY2, "rid-pend0001", next, err, sizeof err), -1);
	assert_non_null(strstr(err, "never admitted"));
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-done0001", JOB_DONE, (const unsigned char *)"x",
					  1, NULL, NULL, NULL, err, sizeof err), 0);
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-fail0001", JOB_FAILED, (const unsigned char *)"x",
					  1, NULL, NULL, NULL, err, sizeof err), 0);

	assert_int_equal(store_job_list_open(f->st, collect_job, &col, err, sizeof err), 0);
	assert_int_equal(col.n, 2);
	assert_string_equal(col.serials[0], "rid-good0001");
	assert_string_equal(col.serials[1], "rid-pend0001");
}

static void test_state_and_serials(void **state)
{
	struct fixture *f = *state;
	char err[512];
	unsigned char *v = NULL;
	size_t vl = 99;
	const unsigned char bin[] = { 0, 1, 2, 0xfe, 0 };

	enroll_one(f);
	assert_int_equal(store_job_state_get(f->st, KEY1, "rid-good0001", "tbs", &v, &vl, err, sizeof err), 0);
	assert_null(v);
	assert_int_equal(vl, 0);
	assert_int_equal(store_job_state_put(f->st, KEY1, "rid-good0001", "tbs", bin, sizeof bin, err, sizeof err), 0);
	assert_int_equal(store_job_state_get(f->st, KEY1, "rid-good0001", "tbs", &v, &vl, err, sizeof err), 1);
	assert_int_equal(vl, sizeof bin);
	assert_memory_equal(v, bin, sizeof bin);
	free(v);
	/* overwrite; other keys and other jobs do not see it */
	assert_int_equal(store_job_state_put(f->st, KEY1, "rid-good0001", "tbs", (const unsigned char *)"new", 3, err, sizeof err), 0);
	assert_int_equal(store_job_state_get(f->st, KEY1, "rid-good0001", "tbs", &v, &vl, err, sizeof err), 1);
	assert_int_equal(vl, 3);
	assert_memory_equal(v, "new", 3);
	free(v);
	assert_int_equal(store_job_state_get(f->st, KEY2, "rid-good0001", "tbs", &v, &vl, err, sizeof err), 0);
	/* an empty value is present, with length 0 */
	assert_int_equal(store_job_state_put(f->st, KEY1, "rid-good0001", "empty", NULL, 0, err, sizeof err), 0);
	assert_int_equal(store_job_state_get(f->st, KEY1, "rid-good0001", "empty", &v, &vl, err, sizeof err), 1);
	assert_int_equal(vl, 0);
	free(v);

	assert_int_equal(store_plugin_state_get(f->st, "local", "next", &v, &vl, err, sizeof err), 0);
	assert_int_equal(store_plugin_state_put(f->st, "local", "next", bin, sizeof bin, err, sizeof err), 0);
	assert_int_equal(store_plugin_state_get(f->st, "local", "next", &v, &vl, err, sizeof err), 1);
	assert_int_equal(vl, sizeof bin);
	assert_memory_equal(v, bin, sizeof bin);
	free(v);
	assert_int_equal(store_plugin_state_get(f->st, "other", "next", &v, &vl, err, sizeof err), 0);

	int64_t now = fg_now();
	assert_int_equal(store_serial_reserve(f->st, "local", "0A0B", now, err, sizeof err), 0);
	assert_int_equal(store_serial_reserve(f->st, "local", "0A0B", now, err, sizeof err), 1);
	assert_int_equal(store_serial_reserve(f->st, "other", "0A0B", now, err, sizeof err), 0);
}

struct revoked_seen {
	int n;
	char serials[4][41];
	size_t der_len;
};

static int on_revoked(void *arg, const char *serial, const char *backend,
		      const unsigned char *der, size_t len)
{
	struct revoked_seen *rs = arg;
	assert_string_equal(backend, "local");
	assert_memory_equal(der, "DER\0!", 5);
	if (rs->n < 4)
		fg_strlcpy(rs->serials[rs->n], serial, sizeof rs->serials[0]);
	rs->der_len = len;
	rs->n++;
	return 0;
}

static void test_device_revoke(void **state)
{
	struct fixture *f = *state;
	char err[512];
	struct store_cert c;
	struct store_admit a;
	struct store_device d;
	struct revoked_seen rs = { 0 };

	enroll_one(f);
	fill_cert(&c, "0A0B", "rid-good0001", 1000);
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-good0001", JOB_DONE, (const unsigned char *)"r",
					  1, &c, "cert.issue", "{}", err, sizeof err), 0);
	admit(&a, "rid-renew001", KEY1, NULL, "dev_1", 0);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
	fill_cert(&c, "0C0D", "rid-renew001", 2000);
	assert_int_equal(store_job_finish(f->st, KEY1, "rid-renew001", JOB_DONE, (const unsigned char *)"r",
					  1, &c, "cert.renew", "{}", err, sizeof err), 0);

	int64_t now = fg_now();
	assert_int_equal(store_device_revoke(f->st, "dev_1", now, on_revoked, &rs, err, sizeof err), 2);
	assert_int_equal(rs.n, 2);
	assert_string_equal(rs.serials[0], "0A0B");
	assert_string_equal(rs.serials[1], "0C0D");
	assert_int_equal(rs.der_len, 5);
	assert_int_equal(q(f, "SELECT count(*) FROM certificates WHERE revoked = 1"), 2);
	char sql[128];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM certificates WHERE revoked_at = %lld", (long long)now);
	assert_int_equal(q(f, sql), 2);
	assert_int_equal(store_device_get(f->st, "dev_1", &d, err, sizeof err), 1);
	assert_int_equal(d.state, DEVICE_REVOKED);
	assert_string_equal(store_device_state_name(d.state), "revoked");
	store_device_clear(&d);
	assert_int_equal(q(f, "SELECT count(*) FROM audit WHERE kind = 'device.revoke' AND device_id = 'dev_1'"), 1);
	assert_int_equal(q(f, "SELECT count(*) FROM audit WHERE kind = 'cert.revoke' AND detail LIKE '%0A0B%'"), 1);
	assert_int_equal(q(f, "SELECT count(*) FROM audit WHERE kind = 'cert.revoke' AND detail LIKE '%0C0D%'"), 1);

	/* again: not an error, nothing to revoke, no callback, no audit noise */
	long long audits = q(f, "SELECT count(*) FROM audit");
	memset(&rs, 0, sizeof rs);
	assert_int_equal(store_device_revoke(f->st, "dev_1", now, on_revoked, &rs, err, sizeof err), 0);
	assert_int_equal(rs.n, 0);
	assert_int_equal(q(f, "SELECT count(*) FROM audit"), audits);

	/* an unknown device is named */
	assert_int_equal(store_device_revoke(f->st, "dev_nope", now, on_revoked, &rs, err, sizeof err), -1);
	assert_non_null(strstr(err, "no device dev_nope"));
	assert_int_equal(rs.n, 0);
}

static int collect_device(void *arg, const struct store_device *d)
{
	struct collected *col = arg;
	if (col->n < 4)
		fg_strlcpy(col->serials[col->n], d->id, sizeof col->serials[0]);
	col->n++;
	return col->n >= 2;   /* stop after two */
}

static void test_devices(void **state)
{
	struct fixture *f = *state;
	char err[512], id[24];
	struct store_admit a;
	struct store_device d;
	struct collected col = { 0 };

	add_token(f, "h-three", 3, fg_now() + 3600, id);
	const char *keys[] = { KEY1, KEY2, "KEY3xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" };
	const char *devs[] = { "dev_c", "dev_a", "dev_b" };
	for (int i = 0; i < 3; i++) {
		char rid[32];
		snprintf(rid, sizeof rid, "rid-dev-%04d", i);
		admit(&a, rid, keys[i], "h-three", devs[i], 1);
		a.now = 1000 + i;
		a.facts_json = NULL;
		assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
	}
	assert_int_equal(store_device_list(f->st, collect_device, &col, err, sizeof err), 0);
	assert_int_equal(col.n, 2);   /* the callback stopped the walk */
	assert_string_equal(col.serials[0], "dev_c");
	assert_string_equal(col.serials[1], "dev_a");

	assert_int_equal(store_device_get(f->st, "dev_a", &d, err, sizeof err), 1);
	assert_null(d.facts_json);
	store_device_clear(&d);
	assert_int_equal(store_device_touch(f->st, "dev_a", "renamed", "{\"k\":1}", 5000, err, sizeof err), 0);
	assert_int_equal(store_device_get(f->st, "dev_a", &d, err, sizeof err), 1);
	assert_string_equal(d.hostname, "renamed");
	assert_string_equal(d.facts_json, "{\"k\":1}");
	assert_int_equal(d.last_seen, 5000);
	store_device_clear(&d);
	/* no new facts keeps the old ones */
	assert_int_equal(store_device_touch(f->st, "dev_a", "renamed", NULL, 6000, err, sizeof err), 0);
	assert_int_equal(store_device_get(f->st, "dev_a", &d, err, sizeof err), 1);
	assert_string_equal(d.facts_json, "{\"k\":1}");
	assert_int_equal(d.last_seen, 6000);
	store_device_clear(&d);
	assert_int_equal(store_device_get(f->st, "dev_zz", &d, err, sizeof err), 0);
	assert_int_equal(store_device_by_key(f->st, "NOPE", &d, err, sizeof err), 0);
}

static void test_audit_chain(void **state)
{
	struct fixture *f = *state;
	char err[512], want[128], sql[256], buf[128];
	long n = 0;

	assert_int_equal(store_audit_verify(f->st, &n, err, sizeof err), 0);
	assert_int_equal(n, 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(store_audit(f->st, "test.event", "dev_x", i % 2 ? "rid-1" : NULL,
					     "{\"i\":1}", 1000 + i, err, sizeof err), 0);
	assert_int_equal(store_audit_verify(f->st, &n, err, sizeof err), 0);
	assert_int_equal(n, 20);
	assert_string_equal(qs(f, "SELECT prev_hash FROM audit WHERE seq = 1", buf, sizeof buf),
			    "0000000000000000000000000000000000000000000000000000000000000000");

	/* the hash is the documented one, so other tools can check it */
	char line[256], h[65];
	int len = snprintf(line, sizeof line, "%s\x1f%d\x1f%d\x1f%s\x1f%s\x1f%s\x1f%s",
			   "0000000000000000000000000000000000000000000000000000000000000000", 1, 1000,
			   "test.event", "dev_x", "", "{\"i\":1}");
	fg_sha256_hex(line, (size_t)len, h);
	assert_string_equal(qs(f, "SELECT hash FROM audit WHERE seq = 1", buf, sizeof buf), h);

	/* an altered detail */
	raw(f, "UPDATE audit SET detail = '{\"i\":2}' WHERE seq = 17");
	assert_int_equal(store_audit_verify(f->st, &n, err, sizeof err), -1);
	assert_non_null(strstr(err, "audit record 17 was altered"));
	raw(f, "UPDATE audit SET detail = '{\"i\":1}' WHERE seq = 17");
	assert_int_equal(store_audit_verify(f->st, &n, err, sizeof err), 0);

	/* a relinked record */
	qs(f, "SELECT prev_hash FROM audit WHERE seq = 9", buf, sizeof buf);
	raw(f, "UPDATE audit SET prev_hash = (SELECT hash FROM audit WHERE seq = 3) WHERE seq = 9");
	assert_int_equal(store_audit_verify(f->st, &n, err, sizeof err), -1);
	assert_non_null(strstr(err, "chain broken at audit record 9: prev_hash does not match record 8"));
	snprintf(sql, sizeof sql, "UPDATE audit SET prev_hash = '%s' WHERE seq = 9", buf);
	raw(f, sql);
	assert_int_equal(store_audit_verify(f->st, &n, err, sizeof err), 0);

	/* a removed record */
	raw(f, "DELETE FROM audit WHERE seq = 17");
	assert_int_equal(store_audit_verify(f->st, &n, err, sizeof err), -1);
	snprintf(want, sizeof want, "audit record 17 is missing (sequence jumps from 16 to 18)");
	assert_non_null(strstr(err, want));
	assert_int_equal(n, 16);
}

static void test_busy_message(void **state)
{
	struct fixture *f = *state;
	char err[512];
	sqlite3 *db = NULL;

	/* another process holds the write lock for longer than the timeout */
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	time_t t0 = time(NULL);
	assert_int_equal(store_audit(f->st, "test.event", NULL, NULL, NULL, fg_now(), err, sizeof err), -1);
	assert_true(time(NULL) - t0 >= 9);
	assert_non_null(strstr(err, "busy for 10 s: another process holds a write lock"));
	assert_int_equal(q(f, "SELECT count(*) FROM audit"), 0);
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);
	/* and works once the lock is gone */
	assert_int_equal(store_audit(f->st, "test.event", NULL, NULL, NULL, fg_now(), err, sizeof err), 0);
}

/* Bulk import: rows registered inside one transaction, visible to no one
 * before commit; abort leaves nothing; the same row again is unchanged and
 * other data for a known serial is a conflict naming what differs. */
static void test_import(void **state)
{
	struct fixture *f = *state;
	char err[512], dev[40], dev2[40], tok[24], serial[65], *attrs = NULL;
	int64_t now = fg_now();
	struct store_import_row r1 = { "SN-1", "host1", "laptops", "{\"site\":\"Paris\"}", "h-imp1",
				       now + 3600 };
	struct store_import_row r2 = { "SN-2", "", "laptops", NULL, "h-imp2", now + 3600 };

	/* aborted: nothing stays */
	assert_int_equal(store_import_begin(f->st, err, sizeof err), 0);
	assert_int_equal(store_import_device(f->st, &r1, now, dev, tok, err, sizeof err), STORE_IMPORT_ADDED);
	assert_int_equal(q(f, "SELECT count(*) FROM devices"), 0);   /* not visible before commit */
	store_import_abort(f->st);
	assert_int_equal(q(f, "SELECT count(*) FROM devices"), 0);
	assert_int_equal(q(f, "SELECT count(*) FROM tokens"), 0);
	assert_int_equal(q(f, "SELECT count(*) FROM audit"), 0);

	assert_int_equal(store_import_begin(f->st, err, sizeof err), 0);
	assert_int_equal(store_import_device(f->st, &r1, now, dev, tok, err, sizeof err), STORE_IMPORT_ADDED);
	assert_int_equal(store_import_device(f->st, &r2, now, dev2, tok, err, sizeof err), STORE_IMPORT_ADDED);
	assert_int_equal(store_import_commit(f->st, "{\"file\":\"x.csv\"}", now, err, sizeof err), 0);
	assert_int_equal(q(f, "SELECT count(*) FROM devices WHERE state = 3"), 2);
	assert_int_equal(q(f, "SELECT count(*) FROM devices WHERE curve_key = 'pre:' || id"), 2);
	assert_int_equal(q(f, "SELECT count(*) FROM tokens WHERE device_id <> '' AND uses_left = 1"), 2);
	assert_int_equal(q(f, "SELECT count(*) FROM audit WHERE kind = 'device.register'"), 2);
	assert_int_equal(q(f, "SELECT count(*) FROM audit WHERE kind = 'device.import'"), 1);
	assert_int_equal(store_device_attrs_get(f->st, dev, serial, &attrs, err, sizeof err), 1);
	assert_string_equal(serial, "SN-1");
	assert_string_equal(attrs, "{\"site\":\"Paris\"}");
	free(attrs);

	/* again: unchanged (attribute order does not matter); other data: conflict */
	struct store_import_row same = r1, moved = r1, other = r1;
	same.attrs_json = "{ \"site\" : \"Paris\" }";
	same.token_hash = "h-imp3";
	moved.group = "servers";
	other.attrs_json = "{\"site\":\"Rome\"}";
	assert_int_equal(store_import_begin(f->st, err, sizeof err), 0);
	assert_int_equal(store_import_device(f->st, &same, now, dev2, tok, err, sizeof err), STORE_IMPORT_UNCHANGED);
	assert_string_equal(dev2, dev);
	assert_int_equal(store_import_device(f->st, &moved, now, dev2, tok, err, sizeof err), STORE_IMPORT_CONFLICT);
	assert_non_null(strstr(err, "in group 'laptops', not 'servers'"));
	assert_int_equal(store_import_device(f->st, &other, now, dev2, tok, err, sizeof err), STORE_IMPORT_CONFLICT);
	assert_non_null(strstr(err, "other attributes"));
	store_import_abort(f->st);
	assert_int_equal(q(f, "SELECT count(*) FROM tokens"), 2);
}

/* Device tokens: enrollment binds the key to the pre-registered device,
 * atomically with the token; the token of another device, a second use and
 * a device no longer registered are refused and write nothing. */
static void test_admit_bound(void **state)
{
	struct fixture *f = *state;
	char err[512], dev[40], dev2[40], tok[24], tid[24], buf[256];
	int64_t now = fg_now();
	struct store_import_row r1 = { "SN-1", "host1", "laptops", NULL, "h-dev1", now + 3600 };
	struct store_import_row r2 = { "SN-2", "", "laptops", NULL, "h-dev2", now + 3600 };
	struct store_admit a;
	struct store_device d;

	assert_int_equal(store_import_begin(f->st, err, sizeof err), 0);
	assert_int_equal(store_import_device(f->st, &r1, now, dev, tok, err, sizeof err), STORE_IMPORT_ADDED);
	assert_int_equal(store_import_device(f->st, &r2, now, dev2, tok, err, sizeof err), STORE_IMPORT_ADDED);
	assert_int_equal(store_import_commit(f->st, "{}", now, err, sizeof err), 0);
	long long audits = q(f, "SELECT count(*) FROM audit");

	/* dev2's token presented for dev */
	admit(&a, "rid-bound001", KEY1, "h-dev2", dev, 0);
	assert_int_equal(store_job_admit_bound(f->st, &a, err, sizeof err), STORE_E_TOKEN);
	assert_int_equal(q(f, "SELECT count(*) FROM audit"), audits);
	assert_int_equal(q(f, "SELECT count(*) FROM tokens WHERE uses_left = 1"), 2);

	admit(&a, "rid-bound001", KEY1, "h-dev1", dev, 0);
	assert_int_equal(store_job_admit_bound(f->st, &a, err, sizeof err), 0);
	assert_int_equal(store_device_by_key(f->st, KEY1, &d, err, sizeof err), 1);
	assert_string_equal(d.id, dev);
	assert_int_equal(d.state, DEVICE_ACTIVE);
	assert_string_equal(d.hostname, "host1");   /* the imported name is kept */
	assert_string_equal(d.facts_json, "{\"os\":\"linux\"}");
	store_device_clear(&d);
	assert_int_equal(q(f, "SELECT count(*) FROM devices"), 2);
	assert_int_equal(q(f, "SELECT uses_left FROM tokens WHERE hash = 'h-dev1'"), 0);
	char sql[160];
	snprintf(sql, sizeof sql, "SELECT group_concat(kind, ',') FROM (SELECT kind FROM audit WHERE seq > %lld ORDER BY seq)",
		 audits);
	assert_string_equal(qs(f, sql, buf, sizeof buf), "token.use,device.enroll,job.admit");

	/* the same token again: used up */
	admit(&a, "rid-bound002", KEY2, "h-dev1", dev, 0);
	assert_int_equal(store_job_admit_bound(f->st, &a, err, sizeof err), STORE_E_TOKEN);
	/* a fresh device token for a device that enrolled meanwhile */
	raw(f, "UPDATE tokens SET uses_left = 1 WHERE hash = 'h-dev1'");
	assert_int_equal(store_job_admit_bound(f->st, &a, err, sizeof err), STORE_E_NOT_REGISTERED);
	assert_non_null(strstr(err, "no longer waiting"));
	assert_int_equal(q(f, "SELECT uses_left FROM tokens WHERE hash = 'h-dev1'"), 1);   /* rolled back */
	/* KEY1 is taken: binding it to dev2 too is refused */
	admit(&a, "rid-bound003", KEY1, "h-dev2", dev2, 0);
	assert_int_equal(store_job_admit_bound(f->st, &a, err, sizeof err), STORE_E_KEY_TAKEN);
	assert_int_equal(q(f, "SELECT state FROM devices WHERE serial = 'SN-2'"), DEVICE_REGISTERED);

	/* store_token_add_bound only for registered devices */
	assert_int_equal(store_token_add_bound(f->st, "h-new", "laptops", 1, now + 60, dev, NULL, now, tid,
					       err, sizeof err), -1);
	assert_non_null(strstr(err, "is active"));
	assert_int_equal(store_token_add_bound(f->st, "h-new", "laptops", 1, now + 60, dev2,
					       "{\"serial\":\"SN-2\"}", now, tid, err, sizeof err), 0);
}

struct tl {
	int n;
	char last[24];
};

static int count_tokens(void *arg, const struct store_token_info *ti)
{
	struct tl *t = arg;
	t->n++;
	fg_strlcpy(t->last, ti->t.id, sizeof t->last);
	return 0;
}

static void test_token_admin(void **state)
{
	struct fixture *f = *state;
	char err[512], id[24], id2[24];
	struct store_token_info ti;
	struct tl t = { 0, "" };
	int64_t now = fg_now();

	assert_int_equal(store_token_add_bound(f->st, "h-b1", "laptops", 5, now + 60, NULL,
					       "{\"tpm\":\"yes\"}", now, id, err, sizeof err), 0);
	add_token(f, "h-b2", 1, now + 60, id2);
	assert_int_equal(store_token_info_get(f->st, id, NULL, &ti, err, sizeof err), 1);
	assert_string_equal(ti.t.group, "laptops");
	assert_int_equal(ti.t.uses_left, 5);
	assert_string_equal(ti.device_id, "");
	assert_string_equal(ti.bound_json, "{\"tpm\":\"yes\"}");
	store_token_info_clear(&ti);
	assert_int_equal(store_token_info_get(f->st, NULL, "h-b2", &ti, err, sizeof err), 1);
	assert_string_equal(ti.t.id, id2);
	assert_null(ti.bound_json);
	store_token_info_clear(&ti);
	assert_int_equal(store_token_info_get(f->st, "tok_none", NULL, &ti, err, sizeof err), 0);
	assert_int_equal(store_token_list(f->st, count_tokens, &t, err, sizeof err), 0);
	assert_int_equal(t.n, 2);

	assert_int_equal(store_token_revoke(f->st, id, now, err, sizeof err), 1);
	assert_int_equal(store_token_revoke(f->st, id, now, err, sizeof err), 2);
	assert_int_equal(store_token_revoke(f->st, "tok_none", now, err, sizeof err), 0);
	assert_int_equal(q(f, "SELECT count(*) FROM audit WHERE kind = 'token.revoke'"), 1);
	/* a revoked token admits nothing */
	struct store_admit a;
	admit(&a, "rid-revoked1", KEY1, "h-b1", "dev_9", 1);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), STORE_E_TOKEN);
}

#define GC_THREADS 16
#define GC_SERIALS 50

struct committer {
	struct store *st;            /* its own connection, as a worker has */
	pthread_barrier_t *go;
	int index;
	int reserved, taken, finish_failed, other;
	char err[512];
};

/* Threads 2k and 2k+1 reserve the same serials, so each serial is won
 * once and refused once; between reservations each asks to finish a job
 * that does not exist, which fails inside the same batches. */
static void *commit_some(void *arg)
{
	struct committer *c = arg;
	char serial[32], err[512];
	pthread_barrier_wait(c->go);
	for (int i = 0; i < GC_SERIALS; i++) {
		snprintf(serial, sizeof serial, "%04X%04X", c->index / 2, i);
		int r = store_serial_reserve(c->st, "local", serial, fg_now(), err, sizeof err);
		if (r == 0)
			c->reserved++;
		else if (r == 1)
			c->taken++;
		else {
			c->other++;
			fg_strlcpy(c->err, err, sizeof c->err);
		}
		r = store_job_finish(c->st, KEY1, "rid-none", JOB_DONE, (const unsigned char *)"x", 1, NULL,
				     NULL, NULL, err, sizeof err);
		if (r == -1 && strstr(err, "never admitted") != NULL)
			c->finish_failed++;
		else
			c->other++;
	}
	return NULL;
}

static void test_group_commit(void **state)
{
	struct fixture *f = *state;
	char err[512];
	pthread_t th[GC_THREADS];
	struct committer c[GC_THREADS];
	pthread_barrier_t go;
	unsigned long b0, i0, b1, i1;

	assert_int_equal(store_group_commit_start(f->path, err, sizeof err), 0);
	assert_true(store_group_commit_on());
	assert_int_equal(store_group_commit_start(f->path, err, sizeof err), -1);
	assert_non_null(strstr(err, "already on"));
	store_group_commit_stats(&b0, &i0);
	assert_int_equal(pthread_barrier_init(&go, NULL, GC_THREADS), 0);
	for (int i = 0; i < GC_THREADS; i++) {
		memset(&c[i], 0, sizeof c[i]);
		c[i].st = store_open(f->path, 0, err, sizeof err);
		assert_non_null(c[i].st);
		c[i].go = &go;
		c[i].index = i;
		assert_int_equal(pthread_create(&th[i], NULL, commit_some, &c[i]), 0);
	}
	int reserved = 0, taken = 0, finish_failed = 0;
	for (int i = 0; i < GC_THREADS; i++) {
		pthread_join(th[i], NULL);
		if (c[i].other)
			fprintf(stderr, "committer %d: %d unexpected results; last: %s\n", i, c[i].other, c[i].err);
		assert_int_equal(c[i].other, 0);
		reserved += c[i].reserved;
		taken += c[i].taken;
		finish_failed += c[i].finish_failed;
		store_free(c[i].st);
	}
	pthread_barrier_destroy(&go);
	store_group_commit_stats(&b1, &i1);
	store_group_commit_stop();
	assert_false(store_group_commit_on());

	/* every serial won exactly once, and kept although failing finishes
	 * shared its transaction */
	assert_int_equal(reserved, GC_THREADS / 2 * GC_SERIALS);
	assert_int_equal(taken, GC_THREADS / 2 * GC_SERIALS);
	assert_int_equal(finish_failed, GC_THREADS * GC_SERIALS);
	assert_int_equal(q(f, "SELECT count(*) FROM serials"), GC_THREADS / 2 * GC_SERIALS);
	/* every request went through a batch; none was counted twice */
	assert_int_equal(i1 - i0, 2 * GC_THREADS * GC_SERIALS);
	assert_true(b1 - b0 >= 1 && b1 - b0 <= i1 - i0);
	fprintf(stderr, "group commit: %lu requests in %lu commits\n", i1 - i0, b1 - b0);
	/* off again: the same calls run alone on the caller's connection */
	assert_int_equal(store_serial_reserve(f->st, "local", "FFFF0000", fg_now(), err, sizeof err), 0);
	store_group_commit_stats(&b0, &i0);
	assert_int_equal(i0, i1);
}

/* Renewal windows: levelled under the ceiling, spilling earlier before the
 * ceiling breaks, inside the lifetime, kept in renewal_hours by the
 * triggers (supersede, revoke), and a pull-in spread over its range. */
static int keep_reply(void *arg, const struct store_window *w, unsigned char **reply, size_t *len)
{
	struct store_window *seen = arg;
	*seen = *w;
	*reply = (unsigned char *)strdup("reply");
	*len = 5;
	return *reply ? 0 : -1;
}

struct load_sum {
	double renewals;
	long expiring, hours;
};

static int sum_load(void *arg, int64_t hour, double renewals, long expiring)
{
	struct load_sum *ls = arg;
	(void)hour;
	ls->renewals += renewals;
	ls->expiring += expiring;
	ls->hours++;
	return 0;
}

static void test_renewal_windows(void **state)
{
	struct fixture *f = *state;
	char err[512], rid[32], serial[16], slot[16];
	struct store_admit a;
	struct store_cert c;
	struct store_window w, seen;
	unsigned char *reply;
	size_t len;
	/* 36 h of life: preferred range 24 h..30 h (6 hours), spill 18 h..24 h */
	const int64_t nb = (fg_now() / 3600 + 1) * 3600, life = 36 * 3600;
	const struct store_renewal_rule rule = { 2.0 / 3, 5.0 / 6, 1.0 / 2, 10 };
	int over = 0;

	enroll_one(f);
	for (int i = 0; i < 130; i++) {
		snprintf(rid, sizeof rid, "rid-win%05d", i);
		snprintf(serial, sizeof serial, "5E%04X", i);
		snprintf(slot, sizeof slot, "s%d", i);
		if (i > 0) {
			admit(&a, rid, KEY1, NULL, "dev_1", 0);
			assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
		} else {
			strcpy(rid, "rid-good0001");
		}
		fill_cert(&c, serial, rid, nb);
		fg_strlcpy(c.slot, slot, sizeof c.slot);
		c.not_after = nb + life;
		assert_int_equal(store_job_finish_cert(f->st, KEY1, rid, &c, &rule, keep_reply, &seen, &reply,
						       &len, &w, "cert.issue", "{}", err, sizeof err), 0);
		assert_string_equal((char *)reply, "reply");
		free(reply);
		/* the reply was built with the window the finish returns */
		assert_int_equal(seen.start, w.start);
		assert_int_equal(seen.end, w.end);
		assert_true(w.start >= nb + 18 * 3600 && w.end <= nb + 30 * 3600);
		assert_true(w.end > w.start && w.end - w.start <= 3600);
		if (i < 60)       /* the preferred range holds 6 x 10 */
			assert_true(w.start >= nb + 24 * 3600);
		else if (i < 120) /* then the earlier range */
			assert_true(w.end <= nb + 24 * 3600);
		assert_int_equal(w.over, i >= 120);
		over += w.over;
	}
	assert_int_equal(over, 10);
	/* levelled: the 6 spill hours at the ceiling, the 6 preferred ones
	 * holding the other 70 (10 above the ceiling spread evenly) */
	char sql[256];
	assert_int_equal(q(f, "SELECT count(*) FROM renewal_hours WHERE n > 0"), 12);
	assert_int_equal(q(f, "SELECT sum(n) FROM renewal_hours"), 130);
	snprintf(sql, sizeof sql, "SELECT count(*) FROM renewal_hours WHERE hour < %lld AND n = 10",
		 (long long)(nb / 3600 + 24));
	assert_int_equal(q(f, sql), 6);
	snprintf(sql, sizeof sql, "SELECT max(n) - min(n) FROM renewal_hours WHERE hour >= %lld",
		 (long long)(nb / 3600 + 24));
	assert_true(q(f, sql) <= 1);
	/* the triggers keep the load equal to the certificates' buckets */
	const char *drift = "SELECT count(*) FROM (SELECT renew_bucket h, count(*) k FROM certificates"
			    " WHERE current = 1 AND revoked = 0 AND renew_bucket IS NOT NULL GROUP BY 1)"
			    " x LEFT JOIN renewal_hours r ON r.hour = x.h WHERE r.n IS NOT x.k";
	assert_int_equal(q(f, drift), 0);

	/* a retried finish of a recorded certificate gets its window again */
	fill_cert(&c, "5E0000", "rid-good0001", nb);
	strcpy(c.slot, "s0");
	c.not_after = nb + life;
	struct store_window first = w;
	assert_int_equal(store_cert_window(f->st, "dev_1", "5E0000", &first.start, &first.end, err, sizeof err), 1);
	assert_int_equal(store_job_finish_cert(f->st, KEY1, "rid-good0001", &c, &rule, keep_reply, &seen,
					       &reply, &len, &w, "cert.issue", "{}", err, sizeof err), 0);
	free(reply);
	assert_int_equal(w.start, first.start);
	assert_int_equal(w.end, first.end);
	assert_int_equal(q(f, "SELECT sum(n) FROM renewal_hours"), 130);

	/* a renewal of slot s0 takes its predecessor off the schedule */
	admit(&a, "rid-renw0001", KEY1, NULL, "dev_1", 0);
	assert_int_equal(store_job_admit(f->st, &a, err, sizeof err), 0);
	fill_cert(&c, "5EFFFF", "rid-renw0001", nb + 3600);
	strcpy(c.slot, "s0");
	c.not_after = nb + 3600 + life;
	assert_int_equal(store_job_finish_cert(f->st, KEY1, "rid-renw0001", &c, &rule, keep_reply, &seen,
					       &reply, &len, &w, "cert.renew", "{}", err, sizeof err), 0);
	free(reply);
	assert_int_equal(q(f, "SELECT current FROM certificates WHERE serial_hex = '5E0000'"), 0);
	assert_int_equal(q(f, "SELECT sum(n) FROM renewal_hours"), 130);
	assert_int_equal(q(f, drift), 0);

	/* the plan sees every current certificate once */
	struct load_sum ls = { 0 };
	assert_int_equal(store_renewal_load(f->st, nb, 48, sum_load, &ls, err, sizeof err), 0);
	assert_int_equal(ls.hours, 48);
	assert_true(ls.renewals > 129.99 && ls.renewals < 130.01);
	assert_int_equal(ls.expiring, 130);

	/* a pull-in spreads every window over its range, levelled */
	long moved = 0;
	int64_t from = (fg_now() / 3600 + 1) * 3600;
	assert_int_equal(store_renewal_pull_in(f->st, "laptops", NULL, from, from + 10 * 3600, &moved, err,
					       sizeof err), 0);
	assert_int_equal(moved, 130);
	assert_int_equal(q(f, "SELECT count(*) FROM certificates WHERE current = 1 AND (renew_start < strftime('%s','now') OR renew_end - renew_start > 3600)"), 0);
	snprintf(sql, sizeof sql, "SELECT max(n) - min(n) FROM renewal_hours WHERE hour >= %lld AND hour < %lld",
		 (long long)from / 3600, (long long)from / 3600 + 10);
	assert_int_equal(q(f, sql), 0);   /* 130 over 10 hours: 13 each */
	assert_int_equal(q(f, "SELECT count(*) FROM audit WHERE kind = 'renewal.pull_in'"), 1);
	/* again: nothing left to move */
	assert_int_equal(store_renewal_pull_in(f->st, "laptops", NULL, from, from + 10 * 3600, &moved, err,
					       sizeof err), 0);
	assert_int_equal(moved, 0);
	/* another group: none of these */
	assert_int_equal(store_renewal_pull_in(f->st, "servers", NULL, from, from + 3600, &moved, err,
					       sizeof err), 0);
	assert_int_equal(moved, 0);
	assert_int_equal(store_renewal_pull_in(f->st, NULL, NULL, from, from, &moved, err, sizeof err), -1);
	assert_non_null(strstr(err, "ends before it starts"));

	/* revoking the device empties the schedule */
	assert_int_equal(store_device_revoke(f->st, "dev_1", fg_now(), NULL, NULL, err, sizeof err), 131);
	assert_int_equal(q(f, "SELECT coalesce(sum(n), 0) FROM renewal_hours"), 0);
	assert_int_equal(q(f, drift), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_migrate_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admit_creates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admit_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_job_finish_and_certs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_jobs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_and_serials, setup, teardown),
		cmocka_unit_test_setup_teardown(test_device_revoke, setup, teardown),
		cmocka_unit_test_setup_teardown(test_devices, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admit_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_admin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_incr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_renewal_windows, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
