/*
 * fleet_json.c: the fleet as JSON for the CLI and the dashboard (see
 * fleet_json.h).
 */
#include <string.h>

#include <openssl/x509.h>

#include "crl.h"
#include "fg_util.h"
#include "fg_x509.h"
#include "fleet_json.h"

const char *const fj_failure_kinds[] = {
	"policy.error",   /* the policy failed on a request */
	"enroll.deny",    /* the policy denied an enrollment */
	"renew.deny",     /* ... or a renewal */
	"cert.reject",    /* the CA refused */
	NULL,
};

int fj_is_failure(const char *kind)
{
	for (size_t i = 0; fj_failure_kinds[i] != NULL; i++)
		if (strcmp(kind, fj_failure_kinds[i]) == 0)
			return 1;
	return 0;
}

json_t *fj_device(const struct store_device *d)
{
	char created[32], seen[32];
	fg_time_iso(d->created_at, created, sizeof created);
	if (d->last_seen > 0)
		fg_time_iso(d->last_seen, seen, sizeof seen);
	else
		fg_strlcpy(seen, "-", sizeof seen);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", d->id, "state",
			      store_device_state_name(d->state), "group", d->group, "hostname", d->hostname,
			      "curve_key", d->curve_key, "created", created, "last_seen", seen);
	json_t *facts = d->facts_json ? json_loads(d->facts_json, 0, NULL) : NULL;
	if (o != NULL)
		json_object_set_new(o, "facts", facts ? facts : json_null());
	else
		json_decref(facts);
	return o;
}

json_t *fj_cert(const struct store_cert *c, int64_t now)
{
	char nb[32], na[32], t1[32], t2[32];
	const char *status = c->revoked ? "revoked" : c->not_after <= now ? "expired" : "valid";
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "serial", c->serial_hex,
			      "device", c->device_id, "slot", c->slot, "backend", c->backend, "subject",
			      c->subject, "not_before", fg_time_iso(c->not_before, nb, sizeof nb),
			      "not_after", fg_time_iso(c->not_after, na, sizeof na), "status", status,
			      "request_id", c->request_id);
	if (o == NULL)
		return NULL;
	if (c->revoked)
		json_object_set_new(o, "revoked_at", json_string(fg_time_iso(c->revoked_at, t1, sizeof t1)));
	if (c->renew_start > 0)
		json_object_set_new(o, "renew_window",
				    json_pack("{s:s, s:s}", "start", fg_time_iso(c->renew_start, t1, sizeof t1),
					      "end", fg_time_iso(c->renew_end, t2, sizeof t2)));
	return o;
}

json_t *fj_command(const struct store_command *c)
{
	char t[32], t1[32] = "", t2[32] = "";
	if (c->delivered_at > 0)
		fg_time_iso(c->delivered_at, t1, sizeof t1);
	if (c->done_at > 0)
		fg_time_iso(c->done_at, t2, sizeof t2);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", c->id, "kind", c->kind, "slot",
			 c->slot, "state", store_command_state_name(c->state), "created",
			 fg_time_iso(c->created_at, t, sizeof t), "delivered", t1, "done", t2, "result",
			 c->result);
}

json_t *fj_audit(const struct store_audit_rec *a)
{
	char t[32];
	json_error_t je;
	json_t *detail = a->detail && *a->detail ? json_loads(a->detail, 0, &je) : NULL;
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:o}", "seq", (json_int_t)a->seq, "time",
			 fg_time_iso(a->ts, t, sizeof t), "kind", a->kind, "device_id", a->device_id,
			 "request_id", a->request_id, "detail", detail ? detail : json_object());
}

struct collect {
	json_t *arr;
	int64_t now;
};

static int collect_cert(void *arg, const struct store_cert *c)
{
	struct collect *k = arg;
	return json_array_append_new(k->arr, fj_cert(c, k->now)) != 0;
}

static int collect_command(void *arg, const struct store_command *c)
{
	struct collect *k = arg;
	return json_array_append_new(k->arr, fj_command(c)) != 0;
}

static int collect_audit(void *arg, const struct store_audit_rec *a)
{
	struct collect *k = arg;
	return json_array_append_new(k->arr, fj_audit(a)) != 0;
}

int fj_device_doc(struct store *st, const char *id, int64_t now, json_t **out, char *err,
		  size_t errlen)
{
	struct store_device d;
	char t1[32], t2[32];
	memset(&d, 0, sizeof d);
	int r = store_device_get(st, id, &d, err, errlen);
	if (r <= 0)
		return r;
	struct collect certs = { json_array(), now }, cmds = { json_array(), now }, hist = { json_array(), now };
	json_error_t je;
	json_t *facts = d.facts_json ? json_loads(d.facts_json, 0, &je) : NULL;
	r = -1;
	*out = NULL;
	if (certs.arr == NULL || cmds.arr == NULL || hist.arr == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	if (store_cert_list(st, d.id, collect_cert, &certs, err, errlen) != 0 ||
	    store_command_list(st, d.id, 0, collect_command, &cmds, err, errlen) != 0 ||
	    store_audit_list(st, d.id, 0, 50, 1, collect_audit, &hist, err, errlen) != 0)
		goto out;
	*out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:O, s:O, s:O}", "id", d.id, "state",
			 store_device_state_name(d.state), "group", d.group, "hostname", d.hostname,
			 "created", fg_time_iso(d.created_at, t1, sizeof t1), "last_seen",
			 d.last_seen ? fg_time_iso(d.last_seen, t2, sizeof t2) : "", "facts",
			 facts ? facts : json_null(), "certificates", certs.arr, "commands", cmds.arr,
			 "history", hist.arr);
	if (*out == NULL)
		fg_seterr(err, errlen, "out of memory");
	else
		r = 1;
out:
	json_decref(facts);
	json_decref(certs.arr);
	json_decref(cmds.arr);
	json_decref(hist.arr);
	store_device_clear(&d);
	return r;
}

struct failures {
	long n[8];
	long total;
};

static int count_failure(void *arg, const char *kind, long count)
{
	struct failures *f = arg;
	for (size_t i = 0; fj_failure_kinds[i] != NULL; i++)
		if (strcmp(kind, fj_failure_kinds[i]) == 0) {
			f->n[i] += count;
			f->total += count;
		}
	return 0;
}

static int add_group(void *arg, const char *group, long devices, long active)
{
	return json_array_append_new(arg, json_pack("{s:s, s:I, s:I}", "group", group, "devices",
						    (json_int_t)devices, "active", (json_int_t)active)) != 0;
}

json_t *fj_summary(struct store *st, int64_t now, char *err, size_t errlen)
{
	struct store_summary s;
	struct failures f;
	json_t *dev = json_object(), *fails = NULL, *groups = json_array();

	memset(&f, 0, sizeof f);
	if (dev == NULL || groups == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	if (store_fleet_summary(st, now, &s, err, errlen) != 0 ||
	    store_audit_count_since(st, now - 3600, count_failure, &f, err, errlen) != 0 ||
	    store_group_counts(st, add_group, groups, err, errlen) != 0)
		goto fail;
	for (int i = 0; i < DEVICE_STATE_MAX; i++)
		json_object_set_new(dev, store_device_state_name(i), json_integer(s.devices[i]));
	fails = json_pack("{s:I}", "total", (json_int_t)f.total);
	for (size_t i = 0; fails != NULL && fj_failure_kinds[i] != NULL; i++)
		json_object_set_new(fails, fj_failure_kinds[i], json_integer(f.n[i]));
	json_t *j = json_pack("{s:o, s:o, s:{s:I, s:I, s:I, s:I, s:I}, s:o, s:{s:I, s:I}}", "devices", dev,
			      "groups", groups, "certificates", "valid", (json_int_t)s.certs_valid,
			      "revoked", (json_int_t)s.certs_revoked, "expired", (json_int_t)s.certs_expired,
			      "expiring_7d", (json_int_t)s.expiring[1], "expiring_30d",
			      (json_int_t)s.expiring[2], "failures_last_hour", fails, "jobs_open",
			      "admitted", (json_int_t)s.jobs_admitted, "pending", (json_int_t)s.jobs_pending);
	if (j == NULL)
		fg_seterr(err, errlen, "out of memory");
	return j;     /* "o" took dev, groups and fails, also on failure */
fail:
	json_decref(dev);
	json_decref(groups);
	return NULL;
}

json_t *fj_backend_health(const struct gw_config *cfg, const struct config_backend *cb,
			  struct backend *b, const char *open_err)
{
	struct fg_cert_list cl;
	char err[1024] = "", when[32];
	json_t *o = json_pack("{s:s, s:s}", "name", cb->name, "plugin", cb->plugin);

	if (o == NULL)
		return NULL;
	memset(&cl, 0, sizeof cl);
	if (b == NULL) {
		json_object_set_new(o, "ok", json_false());
		json_object_set_new(o, "error", json_string(open_err && *open_err ? open_err : "cannot be opened"));
		return o;
	}
	if (b->ops->cacerts == NULL || b->ops->cacerts(b->state, &cl, err, sizeof err) != 0 || cl.n == 0) {
		json_object_set_new(o, "ok", json_false());
		json_object_set_new(o, "error", json_string(err[0] ? err : "the backend offers no CA certificates"));
		fg_cert_list_clear(&cl);
		return o;
	}
	X509 *x = fg_cert_from_der(cl.der[0], cl.len[0], NULL, 0);
	struct fg_cert_info ci;
	if (x != NULL && fg_cert_info(x, &ci, NULL, 0) == 0) {
		json_object_set_new(o, "ca", json_string(ci.subject));
		json_object_set_new(o, "ca_not_after", json_string(fg_time_iso(ci.not_after, when, sizeof when)));
	}
	X509_free(x);
	fg_cert_list_clear(&cl);
	json_object_set_new(o, "ok", json_true());
	if (b->ops->make_crl != NULL) {
		struct crl_info ci2;
		int r = crl_read_info(cfg, cb->name, &ci2, err, sizeof err);
		if (r == 1)
			json_object_set_new(o, "crl", json_pack("{s:s, s:I, s:s, s:b}", "number", ci2.number,
				"entries", (json_int_t)ci2.entries, "next_update",
				fg_time_iso(ci2.next_update, when, sizeof when), "fresh",
				ci2.next_update > fg_now()));
		else
			json_object_set_new(o, "crl", json_pack("{s:s}", "error",
				r == 0 ? "not published yet; fleetgated with http publishes it" : err));
	}
	return o;
}
