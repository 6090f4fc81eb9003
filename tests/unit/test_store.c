/*
 * Unit tests for the SQLite store: migrations, tokens consumed atomically
 * (twenty threads racing for one use), jobs, certificates, revocation and
 * the audit hash chain (altered and removed records are found).
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

#include "fg_util.h"
#include "store.h"

static char dir[64], dbpath[128];

static int setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/fg-store.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(dbpath, sizeof dbpath, "%s/t.db", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int count(const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *s;
	int n = -1;
	sqlite3_open(dbpath, &db);
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return n;
}

static void raw(const char *sql)
{
	sqlite3 *db;
	sqlite3_open(dbpath, &db);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
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
	a->params_json = "{}";
	a->token_hash = hash;
	a->device_id = dev;
	a->create_device = create;
	a->group = "g";
	a->hostname = "h";
	a->now = fg_now();
}

static void test_open_and_tokens(void **state)
{
	char err[512], id[24];
	struct store_token t;
	(void)state;
	assert_null(store_open(dbpath, 0, err, sizeof err));
	assert_non_null(strstr(err, "fleetgate init"));
	struct store *st = store_open(dbpath, 1, err, sizeof err);
	assert_non_null(st);
	assert_true(store_schema_version(st) >= 1);
	int64_t now = fg_now();
	assert_int_equal(store_token_add(st, "h-live", "laptops", 1, now + 3600, now, id, err, sizeof err), 0);
	assert_int_equal(store_token_add(st, "h-expired", "laptops", 1, now - 1, now, id, err, sizeof err), 0);
	assert_int_equal(store_token_lookup(st, "h-live", &t, err, sizeof err), 1);
	assert_string_equal(t.group, "laptops");
	assert_int_equal(t.uses_left, 1);
	assert_int_equal(store_token_lookup(st, "h-none", &t, err, sizeof err), 0);
	store_free(st);

	/* reopen without create: migrations are not re-applied */
	st = store_open(dbpath, 0, err, sizeof err);
	assert_non_null(st);
	store_free(st);
	assert_int_equal(count("SELECT count(*) FROM schema_migrations"), 1);

	/* a store from a newer fleetgate is refused */
	raw("INSERT INTO schema_migrations VALUES (999, 0)");
	assert_null(store_open(dbpath, 0, err, sizeof err));
	assert_non_null(strstr(err, "newer"));
	raw("DELETE FROM schema_migrations WHERE version = 999");
}

static void test_admit_rules(void **state)
{
	char err[512];
	struct store_admit a;
	(void)state;
	struct store *st = store_open(dbpath, 0, err, sizeof err);
	assert_non_null(st);
	int devices = count("SELECT count(*) FROM devices");

	admit(&a, "rid-expired1", "KEY1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "h-expired", "dev_1", 1);
	assert_int_equal(store_job_admit(st, &a, err, sizeof err), STORE_E_TOKEN);
	assert_int_equal(count("SELECT count(*) FROM devices"), devices);
	assert_int_equal(count("SELECT count(*) FROM jobs"), 0);

	admit(&a, "rid-good0001", "KEY1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "h-live", "dev_1", 1);
	assert_int_equal(store_job_admit(st, &a, err, sizeof err), 0);
	assert_int_equal(count("SELECT uses_left FROM tokens WHERE hash = 'h-live'"), 0);
	struct store_device d;
	assert_int_equal(store_device_by_key(st, "KEY1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", &d, err, sizeof err), 1);
	assert_string_equal(d.id, "dev_1");
	assert_int_equal(d.state, DEVICE_ACTIVE);
	store_device_clear(&d);

	/* used up */
	admit(&a, "rid-again001", "KEY2xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "h-live", "dev_2", 1);
	assert_int_equal(store_job_admit(st, &a, err, sizeof err), STORE_E_TOKEN);
	/* same request id from the same key */
	admit(&a, "rid-good0001", "KEY1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", NULL, "dev_1", 0);
	assert_int_equal(store_job_admit(st, &a, err, sizeof err), STORE_E_DUPLICATE);
	/* a key already bound */
	char id[24];
	int64_t now = fg_now();
	assert_int_equal(store_token_add(st, "h-two", "g", 5, now + 60, now, id, err, sizeof err), 0);
	admit(&a, "rid-other001", "KEY1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "h-two", "dev_9", 1);
	assert_int_equal(store_job_admit(st, &a, err, sizeof err), STORE_E_KEY_TAKEN);
	assert_int_equal(count("SELECT uses_left FROM tokens WHERE hash = 'h-two'"), 5);
	store_free(st);
}

struct racer {
	int index;
	int rc;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	char err[512], rid[32], key[48], dev[32];
	struct store_admit a;
	struct store *st = store_open(dbpath, 0, err, sizeof err);
	if (st == NULL) {
		r->rc = -1;
		return NULL;
	}
	snprintf(rid, sizeof rid, "rid-race-%04d", r->index);
	snprintf(key, sizeof key, "RACE%036d", r->index);
	snprintf(dev, sizeof dev, "dev_race%d", r->index);
	admit(&a, rid, key, "h-race", dev, 1);
	r->rc = store_job_admit(st, &a, err, sizeof err);
	store_free(st);
	return NULL;
}

static void test_token_race(void **state)
{
	char err[512], id[24];
	pthread_t th[20];
	struct racer r[20];
	(void)state;
	struct store *st = store_open(dbpath, 0, err, sizeof err);
	int64_t now = fg_now();
	assert_int_equal(store_token_add(st, "h-race", "g", 1, now + 60, now, id, err, sizeof err), 0);
	store_free(st);
	for (int i = 0; i < 20; i++) {
		r[i].index = i;
		pthread_create(&th[i], NULL, race, &r[i]);
	}
	int wins = 0, token_refusals = 0;
	for (int i = 0; i < 20; i++) {
		pthread_join(th[i], NULL);
		wins += r[i].rc == 0;
		token_refusals += r[i].rc == STORE_E_TOKEN;
	}
	assert_int_equal(wins, 1);
	assert_int_equal(token_refusals, 19);
	assert_int_equal(count("SELECT count(*) FROM devices WHERE id LIKE 'dev_race%'"), 1);
}

static int count_cb(void *arg, const struct store_cert *c)
{
	(void)c;
	(*(int *)arg)++;
	return 0;
}

static int revoked_cb(void *arg, const char *serial, const char *backend, const unsigned char *der,
		      size_t len)
{
	(void)backend;
	(void)der;
	(void)len;
	assert_string_equal(serial, "0A0B");
	(*(int *)arg)++;
	return 0;
}

static void test_jobs_certs_revoke(void **state)
{
	char err[512];
	struct store_job j;
	(void)state;
	struct store *st = store_open(dbpath, 0, err, sizeof err);
	const char *key = "KEY1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
	assert_int_equal(store_job_get(st, key, "rid-good0001", &j, err, sizeof err), 1);
	assert_int_equal(j.state, JOB_ADMITTED);
	store_job_clear(&j);
	/* another key cannot see this request id */
	assert_int_equal(store_job_get(st, "KEYZxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "rid-good0001", &j, err, sizeof err), 0);

	unsigned char *v;
	size_t vl;
	assert_int_equal(store_job_state_get(st, key, "rid-good0001", "tbs", &v, &vl, err, sizeof err), 0);
	assert_int_equal(store_job_state_put(st, key, "rid-good0001", "tbs", (const unsigned char *)"abc", 3, err, sizeof err), 0);
	assert_int_equal(store_job_state_get(st, key, "rid-good0001", "tbs", &v, &vl, err, sizeof err), 1);
	assert_memory_equal(v, "abc", 3);
	free(v);
	assert_int_equal(store_plugin_state_put(st, "local", "k", (const unsigned char *)"v", 1, err, sizeof err), 0);
	assert_int_equal(store_plugin_state_get(st, "local", "k", &v, &vl, err, sizeof err), 1);
	free(v);
	assert_int_equal(store_serial_reserve(st, "local", "0A0B", fg_now(), err, sizeof err), 0);
	assert_int_equal(store_serial_reserve(st, "local", "0A0B", fg_now(), err, sizeof err), 1);

	int open = 0;
	struct store_cert c;
	memset(&c, 0, sizeof c);
	strcpy(c.serial_hex, "0A0B");
	strcpy(c.device_id, "dev_1");
	strcpy(c.slot, "default");
	strcpy(c.backend, "local");
	strcpy(c.request_id, "rid-good0001");
	strcpy(c.subject, "CN=h");
	c.not_before = 1;
	c.not_after = fg_now() + 100;
	c.der = (unsigned char *)"DER!";
	c.der_len = 4;
	assert_int_equal(store_job_finish(st, key, "rid-good0001", JOB_DONE, (const unsigned char *)"reply", 5,
					  &c, "cert.issue", "{}", err, sizeof err), 0);
	/* finishing the same job again is idempotent; the same serial for another request is refused */
	assert_int_equal(store_job_finish(st, key, "rid-good0001", JOB_DONE, (const unsigned char *)"reply", 5,
					  &c, "cert.issue", "{}", err, sizeof err), 0);
	strcpy(c.request_id, "rid-other999");
	assert_int_equal(store_job_finish(st, key, "rid-other999", JOB_DONE, (const unsigned char *)"r", 1,
					  &c, "cert.issue", "{}", err, sizeof err), -1);
	assert_non_null(strstr(err, "duplicate serial"));
	assert_int_equal(count("SELECT count(*) FROM certificates WHERE serial_hex = '0A0B'"), 1);
	strcpy(c.request_id, "rid-good0001");
	assert_int_equal(store_job_get(st, key, "rid-good0001", &j, err, sizeof err), 1);
	assert_int_equal(j.state, JOB_DONE);
	assert_int_equal(j.reply_len, 5);
	assert_memory_equal(j.reply, "reply", 5);
	store_job_clear(&j);
	struct store_cert got;
	assert_int_equal(store_cert_get(st, "0A0B", &got, err, sizeof err), 1);
	assert_int_equal(got.der_len, 4);
	assert_string_equal(got.device_id, "dev_1");
	store_cert_clear(&got);
	assert_int_equal(store_cert_list(st, "dev_1", count_cb, &open, err, sizeof err), 0);
	assert_int_equal(open, 1);

	int called = 0;
	assert_int_equal(store_device_revoke(st, "dev_1", fg_now(), revoked_cb, &called, err, sizeof err), 1);
	assert_int_equal(called, 1);
	assert_int_equal(store_cert_get(st, "0A0B", &got, err, sizeof err), 1);
	assert_int_equal(got.revoked, 1);
	store_cert_clear(&got);
	struct store_device d;
	assert_int_equal(store_device_get(st, "dev_1", &d, err, sizeof err), 1);
	assert_int_equal(d.state, DEVICE_REVOKED);
	store_device_clear(&d);
	store_free(st);
}

static void test_audit_chain(void **state)
{
	char err[512];
	long n = 0;
	(void)state;
	struct store *st = store_open(dbpath, 0, err, sizeof err);
	for (int i = 0; i < 5; i++)
		assert_int_equal(store_audit(st, "test.event", "dev_x", NULL, "{\"i\":1}", fg_now(), err, sizeof err), 0);
	assert_int_equal(store_audit_verify(st, &n, err, sizeof err), 0);
	assert_true(n >= 5);

	/* the last five records are the test's own */
	int last = count("SELECT max(seq) FROM audit");
	char sql[160], want[64];
	snprintf(sql, sizeof sql, "UPDATE audit SET detail = '{\"i\":2}' WHERE seq = %d", last - 2);
	raw(sql);
	assert_int_equal(store_audit_verify(st, &n, err, sizeof err), -1);
	snprintf(want, sizeof want, "record %d was altered", last - 2);
	assert_non_null(strstr(err, want));
	snprintf(sql, sizeof sql, "UPDATE audit SET detail = '{\"i\":1}' WHERE seq = %d", last - 2);
	raw(sql);
	assert_int_equal(store_audit_verify(st, &n, err, sizeof err), 0);

	snprintf(sql, sizeof sql, "DELETE FROM audit WHERE seq = %d", last - 1);
	raw(sql);
	assert_int_equal(store_audit_verify(st, &n, err, sizeof err), -1);
	snprintf(want, sizeof want, "record %d is missing", last - 1);
	assert_non_null(strstr(err, want));
	store_free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_and_tokens),
		cmocka_unit_test(test_admit_rules),
		cmocka_unit_test(test_token_race),
		cmocka_unit_test(test_jobs_certs_revoke),
		cmocka_unit_test(test_audit_chain),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
