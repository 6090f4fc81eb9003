/*
 * admin.c: the admin socket (admin.h), the daemon's side and the CLI's.
 */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "admin.h"
#include "confine.h"
#include "fg_log.h"
#include "fg_util.h"
#include "fleetgate/plugin.h"
#include "signer.pb-c.h"
#include "signer_ipc.h"

#define ADMIN_MSG_MAX (16u * 1024 * 1024)
#define ADMIN_IO_TIMEOUT_S 30

struct admin {
	const struct gw_config *cfg;
	struct signer_client *signer;
	char path[PATH_MAX];
	int fd;                        /* listening socket */
	int stop;                      /* eventfd */
	pthread_t thread;
	int started;
	gid_t group;                   /* admin_group's gid, or (gid_t)-1 */
};

int admin_socket_path(const struct gw_config *cfg, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s/admin.sock", cfg->state_dir);
	struct sockaddr_un su;
	return n < 0 || (size_t)n >= outlen || (size_t)n >= sizeof su.sun_path ? -1 : 0;
}

/* ---- the daemon's side ---- */

/* May the peer of fd use the socket? 1 yes, 0 no (why says who and what
 * to do). Root, the daemon's own user and members of admin_group may. */
static int peer_allowed(const struct admin *a, int fd, char *why, size_t whylen)
{
	struct ucred uc;
	socklen_t l = sizeof uc;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) != 0) {
		snprintf(why, whylen, "the daemon cannot tell who is connecting (SO_PEERCRED: %s)", strerror(errno));
		return 0;
	}
	if (uc.uid == 0 || uc.uid == geteuid())
		return 1;
	char name[256] = "";
	int member = 0;
	if (confine_lookup_peer(uc.uid, a->group, name, sizeof name, &member) != 0) {
		snprintf(why, whylen, "the daemon cannot look up uid %u (its policy reader did not answer); restart fleetgated",
			 (unsigned)uc.uid);
		return 0;
	}
	if (a->group != (gid_t)-1) {
		if (uc.gid == a->group || member == 1)
			return 1;
		snprintf(why, whylen, "user %s (uid %u) may not use the admin socket of this gateway: it is for root and members of group %s; ask an operator to run `usermod -aG %s %s`",
			 name[0] ? name : "?", (unsigned)uc.uid, a->cfg->admin_group, a->cfg->admin_group,
			 name[0] ? name : "USER");
		return 0;
	}
	snprintf(why, whylen, "user %s (uid %u) may not use the admin socket of this gateway: it is for root (set admin_group = \"...\" in fleetgated.conf to let a group in)",
		 name[0] ? name : "?", (unsigned)uc.uid);
	return 0;
}

static void send_error(int fd, uint32_t id, const char *msg)
{
	Fgsigner__Reply rep = FGSIGNER__REPLY__INIT;
	unsigned char buf[1024];

	rep.error = (char *)msg;
	size_t n = fgsigner__reply__get_packed_size(&rep);
	if (n <= sizeof buf) {
		fgsigner__reply__pack(&rep, buf);
		signer_ipc_send(fd, SIGNER_MSG_REPLY, id, buf, n);
	}
}

/* A signing request from the CLI: only the kinds operator commands need. */
static void serve_sign(struct admin *a, int fd, const struct signer_hdr *h, const unsigned char *body)
{
	Fgsigner__Request *req = fgsigner__request__unpack(NULL, h->len, body);
	Fgsigner__Reply rep = FGSIGNER__REPLY__INIT;
	Fgsigner__Result res = FGSIGNER__RESULT__INIT, *resp = &res;
	unsigned char *out = NULL, *packed = NULL;
	size_t outlen = 0;
	char err[512] = "";

	if (req == NULL || req->n_items != 1) {
		send_error(fd, h->id, "the admin socket takes a signer Request of one item");
		goto out;
	}
	const Fgsigner__Item *it = req->items[0];
	if (it->kind != FGSIGNER__KIND__KIND_ALGORITHM && it->kind != FGSIGNER__KIND__KIND_CRL) {
		send_error(fd, h->id, "the admin socket signs CRLs only (and answers the algorithm query)");
		goto out;
	}
	if (a->signer == NULL) {
		send_error(fd, h->id, "this gateway has no signer process (no local backend)");
		goto out;
	}
	int r = signer_client_sign(a->signer, it->backend, (int)it->kind, NULL, NULL, it->der.data, it->der.len,
				   &out, &outlen, err, sizeof err);
	res.id = it->id;
	res.status = r == 0 ? FGSIGNER__STATUS__STATUS_OK
			    : r > 0 ? FGSIGNER__STATUS__STATUS_REFUSED : FGSIGNER__STATUS__STATUS_ERROR;
	res.der.data = out;
	res.der.len = outlen;
	res.reason = r != 0 ? err : NULL;
	rep.n_results = 1;
	rep.results = &resp;
	size_t n = fgsigner__reply__get_packed_size(&rep);
	if ((packed = malloc(n ? n : 1)) != NULL) {
		fgsigner__reply__pack(&rep, packed);
		signer_ipc_send(fd, SIGNER_MSG_REPLY, h->id, packed, n);
	}
	if (r == 0 && it->kind == FGSIGNER__KIND__KIND_CRL)
		fg_info("admin", NULL, "the signer signed a CRL of backend %s for the CLI", it->backend);
	else if (r != 0)
		fg_warn("admin", NULL, "the CLI's request for backend %s was not signed: %s", it->backend, err);
out:
	free(out);
	free(packed);
	fgsigner__request__free_unpacked(req, NULL);
}

static void serve_status(struct admin *a, int fd, uint32_t id)
{
	pid_t sp = a->signer ? signer_client_pid(a->signer) : 0;
	json_t *o = json_pack("{s:i, s:s, s:s, s:{s:i, s:i, s:s}}", "pid", (int)getpid(), "version", FG_VERSION,
			      "confinement", confine_describe(), "signer", "pid", (int)sp, "monitor",
			      a->signer ? (int)signer_client_monitor_pid(a->signer) : 0, "sandbox", a->cfg->sandbox);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	if (text != NULL)
		signer_ipc_send(fd, ADMIN_MSG_STATUS_REPLY, id, text, strlen(text));
	free(text);
	json_decref(o);
}

/* One connection: requests until the peer closes or errs. */
static void serve_conn(struct admin *a, int fd)
{
	char why[512];
	struct timeval tv = { ADMIN_IO_TIMEOUT_S, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (!peer_allowed(a, fd, why, sizeof why)) {
		fg_warn("admin", NULL, "refused: %s", why);
		send_error(fd, 0, why);
		/* Let the answer arrive before the close: unread input would
		 * turn the close into a reset that can overtake it. */
		struct timeval brief = { 1, 0 };
		char sink[512];
		shutdown(fd, SHUT_WR);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &brief, sizeof brief);
		for (int i = 0; i < 64 && recv(fd, sink, sizeof sink, 0) > 0; i++)
			;
		return;
	}
	for (;;) {
		struct signer_hdr h;
		unsigned char *body = NULL;
		char err[512];
		int r = signer_ipc_recv(fd, ADMIN_MSG_MAX, &h, &body, err, sizeof err);
		if (r != 0) {
			if (r < 0)
				fg_warn("admin", NULL, "connection dropped: %s", err);
			free(body);
			return;
		}
		if (h.type == SIGNER_MSG_REQUEST)
			serve_sign(a, fd, &h, body);
		else if (h.type == ADMIN_MSG_STATUS)
			serve_status(a, fd, h.id);
		else
			send_error(fd, h.id, "unknown admin message type");
		free(body);
	}
}

static void *admin_loop(void *arg)
{
	struct admin *a = arg;
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		struct pollfd p[2] = { { a->fd, POLLIN, 0 }, { a->stop, POLLIN, 0 } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fg_err("admin", NULL, "poll: %s; the admin socket stops", strerror(errno));
			return NULL;
		}
		if (p[1].revents)
			return NULL;
		int c = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		serve_conn(a, c);
		close(c);
	}
}

struct admin *admin_start(const struct gw_config *cfg, struct signer_client *signer, char *err,
			  size_t errlen)
{
	struct admin *a = calloc(1, sizeof *a);
	struct sockaddr_un su = { .sun_family = AF_UNIX };

	if (a == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	a->cfg = cfg;
	a->signer = signer;
	a->fd = a->stop = -1;
	a->group = (gid_t)-1;
	if (cfg->admin_group[0]) {
		struct group *g = getgrnam(cfg->admin_group);
		if (g == NULL) {
			fg_seterr(err, errlen, "admin_group '%s' does not exist; create it (groupadd --system %s) or unset admin_group",
				  cfg->admin_group, cfg->admin_group);
			goto fail;
		}
		a->group = g->gr_gid;
	}
	if (admin_socket_path(cfg, a->path, sizeof a->path) != 0) {
		fg_seterr(err, errlen, "the state directory path is too long for a Unix socket");
		goto fail;
	}
	fg_strlcpy(su.sun_path, a->path, sizeof su.sun_path);
	/* A socket a live daemon answers on means a second daemon. */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&su, sizeof su) == 0) {
		close(probe);
		fg_seterr(err, errlen, "another fleetgated serves %s; stop it first", cfg->state_dir);
		goto fail;
	}
	if (probe >= 0)
		close(probe);
	unlink(a->path);
	if ((a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    bind(a->fd, (struct sockaddr *)&su, sizeof su) != 0 || listen(a->fd, 16) != 0) {
		fg_seterr(err, errlen, "cannot listen on %s: %s", a->path, strerror(errno));
		goto fail;
	}
	/* Who may connect is decided by SO_PEERCRED on each connection; the
	 * file mode only keeps the group tidy. */
	if (chmod(a->path, a->group != (gid_t)-1 ? 0660 : 0666) != 0 ||
	    (a->group != (gid_t)-1 && chown(a->path, (uid_t)-1, a->group) != 0)) {
		fg_seterr(err, errlen, "cannot set the mode of %s: %s", a->path, strerror(errno));
		goto fail;
	}
	if ((a->stop = eventfd(0, EFD_CLOEXEC)) < 0) {
		fg_seterr(err, errlen, "cannot make the admin socket's stop event: %s", strerror(errno));
		goto fail;
	}
	return a;
fail:
	admin_stop(a);
	return NULL;
}

int admin_serve(struct admin *a, char *err, size_t errlen)
{
	if (pthread_create(&a->thread, NULL, admin_loop, a) != 0) {
		fg_seterr(err, errlen, "cannot start the admin socket thread");
		return -1;
	}
	a->started = 1;
	return 0;
}

void admin_stop(struct admin *a)
{
	if (a == NULL)
		return;
	if (a->started) {
		uint64_t one = 1;
		if (write(a->stop, &one, sizeof one) == sizeof one)
			pthread_join(a->thread, NULL);
	}
	if (a->fd >= 0) {
		close(a->fd);
		unlink(a->path);
	}
	if (a->stop >= 0)
		close(a->stop);
	free(a);
}

/* ---- the CLI's side ---- */

struct admin_client {
	int fd;
	uint32_t next_id;
};

/* One exchange: send type/body, read the reply (malloc'd). 0 or -1. */
static int client_exchange(struct admin_client *c, uint16_t type, const void *body, size_t len,
			   struct signer_hdr *h, unsigned char **reply, char *err, size_t errlen)
{
	uint32_t id = ++c->next_id;

	if (signer_ipc_send(c->fd, type, id, body, len) != 0) {
		fg_seterr(err, errlen, "cannot write to the gateway's admin socket: %s", strerror(errno));
		return -1;
	}
	int r = signer_ipc_recv(c->fd, ADMIN_MSG_MAX, h, reply, err, errlen);
	if (r != 0) {
		if (r == 1)
			fg_seterr(err, errlen, "the gateway closed its admin socket");
		return -1;
	}
	return 0;
}

int admin_connect(const struct gw_config *cfg, struct admin_client **out, char *err, size_t errlen)
{
	struct sockaddr_un su = { .sun_family = AF_UNIX };
	char path[PATH_MAX];
	struct admin_client *c = NULL;
	struct timeval tv = { ADMIN_IO_TIMEOUT_S, 0 };

	*out = NULL;
	if (admin_socket_path(cfg, path, sizeof path) != 0)
		return 0;
	fg_strlcpy(su.sun_path, path, sizeof su.sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fg_seterr(err, errlen, "cannot make a socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&su, sizeof su) != 0) {
		int e = errno;
		close(fd);
		if (e == ENOENT || e == ECONNREFUSED)
			return 0;          /* no daemon: offline */
		fg_seterr(err, errlen, "cannot connect to %s: %s", path, strerror(e));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if ((c = calloc(1, sizeof *c)) == NULL) {
		close(fd);
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	c->fd = fd;
	/* Ask for the status: the daemon answers, or says why it refuses. */
	char *st = admin_client_status(c, err, errlen);
	if (st == NULL) {
		admin_client_free(c);
		return -1;
	}
	free(st);
	*out = c;
	return 1;
}

void admin_client_free(struct admin_client *c)
{
	if (c == NULL)
		return;
	close(c->fd);
	free(c);
}

char *admin_client_status(struct admin_client *c, char *err, size_t errlen)
{
	struct signer_hdr h;
	unsigned char *reply = NULL;

	if (client_exchange(c, ADMIN_MSG_STATUS, NULL, 0, &h, &reply, err, errlen) != 0)
		return NULL;
	if (h.type != ADMIN_MSG_STATUS_REPLY) {
		Fgsigner__Reply *rep = fgsigner__reply__unpack(NULL, h.len, reply);
		fg_seterr(err, errlen, "%s", rep && rep->error ? rep->error : "the gateway gave no status");
		fgsigner__reply__free_unpacked(rep, NULL);
		free(reply);
		return NULL;
	}
	return (char *)reply;   /* NUL-terminated by signer_ipc_recv */
}

int admin_client_sign(void *client, const char *backend, int kind, const char *profile, const char *serial,
		      const unsigned char *in, size_t len, unsigned char **out, size_t *outlen, char *err,
		      size_t errlen)
{
	struct admin_client *c = client;
	Fgsigner__Item item = FGSIGNER__ITEM__INIT, *ip = &item;
	Fgsigner__Request req = FGSIGNER__REQUEST__INIT;
	struct signer_hdr h;
	unsigned char *body = NULL, *reply = NULL;
	int rc = -1;

	(void)serial;
	*out = NULL;
	*outlen = 0;
	item.id = 1;
	item.kind = (Fgsigner__Kind)kind;
	item.backend = (char *)backend;
	item.profile = (char *)(profile ? profile : "");
	item.der.data = (uint8_t *)in;
	item.der.len = in ? len : 0;
	req.n_items = 1;
	req.items = &ip;
	size_t blen = fgsigner__request__get_packed_size(&req);
	if ((body = malloc(blen ? blen : 1)) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	fgsigner__request__pack(&req, body);
	if (client_exchange(c, SIGNER_MSG_REQUEST, body, blen, &h, &reply, err, errlen) != 0)
		goto out;
	Fgsigner__Reply *rep = fgsigner__reply__unpack(NULL, h.len, reply);
	if (rep == NULL || (rep->error && rep->error[0]) || rep->n_results != 1) {
		fg_seterr(err, errlen, "the gateway did not sign: %s",
			  rep && rep->error && rep->error[0] ? rep->error : "its reply does not decode");
		rc = 1;
	} else if (rep->results[0]->status != FGSIGNER__STATUS__STATUS_OK) {
		fg_seterr(err, errlen, "%s", rep->results[0]->reason ? rep->results[0]->reason : "no reason given");
		rc = rep->results[0]->status == FGSIGNER__STATUS__STATUS_REFUSED ? 1 : -1;
	} else if ((*out = malloc(rep->results[0]->der.len + 1)) != NULL) {
		if (rep->results[0]->der.len > 0)
			memcpy(*out, rep->results[0]->der.data, rep->results[0]->der.len);
		*outlen = rep->results[0]->der.len;
		rc = 0;
	}
	fgsigner__reply__free_unpacked(rep, NULL);
out:
	free(body);
	free(reply);
	return rc;
}
