/*
 * hookproc.c: the hook runner (see hookproc.h).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fg_log.h"
#include "fg_util.h"
#include "hookproc.h"
#include "slot.h"

#define HOOK_VERSION 1
#define HOOK_BODY_MAX 1024      /* a slot name (request), rc + message (reply) */
#define HOOK_MARGIN 30          /* seconds beyond the hook's own timeout */

enum hook_type {
	HOOK_RUN = 1,           /* body: the slot name, not NUL-terminated */
	HOOK_DONE = 2,          /* body: int32_t rc (0 or -1), then the message */
	HOOK_TYPE_MAX
};

struct hook_hdr {
	uint16_t version;       /* HOOK_VERSION */
	uint16_t type;          /* enum hook_type */
	uint32_t len;           /* body bytes, <= HOOK_BODY_MAX */
	uint32_t id;            /* request id, echoed in the reply */
};

struct hook_msg {
	struct hook_hdr h;
	char body[HOOK_BODY_MAX];
};

struct hookproc {
	int fd;
	pid_t pid;
	uint32_t next_id;
};

/* Receive one message: its size, 0 at end of file, -1 on error or when the
 * header is malformed (errno EBADMSG). */
static ssize_t msg_recv(int fd, struct hook_msg *m)
{
	ssize_t n;
	do
		n = recv(fd, m, sizeof *m, MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n;
	if ((size_t)n < sizeof m->h || (size_t)n > sizeof *m || m->h.version != HOOK_VERSION ||
	    m->h.len > HOOK_BODY_MAX || m->h.len != (size_t)n - sizeof m->h) {
		errno = EBADMSG;
		return -1;
	}
	return n;
}

static int msg_send(int fd, uint16_t type, uint32_t id, const void *body, size_t len)
{
	struct hook_msg m;
	if (len > HOOK_BODY_MAX)
		len = HOOK_BODY_MAX;
	memset(&m.h, 0, sizeof m.h);
	m.h.version = HOOK_VERSION;
	m.h.type = type;
	m.h.len = (uint32_t)len;
	m.h.id = id;
	memcpy(m.body, body, len);
	ssize_t n;
	do
		n = send(fd, &m, sizeof m.h + len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)(sizeof m.h + len) ? 0 : -1;
}

static void reply(int fd, uint32_t id, int rc, const char *msg)
{
	char body[HOOK_BODY_MAX];
	int32_t r = rc;
	size_t ml = strlen(msg);
	if (ml > sizeof body - sizeof r)
		ml = sizeof body - sizeof r;
	memcpy(body, &r, sizeof r);
	memcpy(body + sizeof r, msg, ml);
	if (msg_send(fd, HOOK_DONE, id, body, sizeof r + ml) != 0)
		_exit(1);
}

/* The runner: trusts nothing it receives. A malformed message or an
 * unknown slot gets an error answer (or ends the runner when the framing
 * is broken); the command run is always the configured one. */
static void runner_main(const struct agent_config *cfg, int fd)
{
	struct hook_msg m;
	signal(SIGHUP, SIG_IGN);     /* a SIGHUP is for the agent (reload) */
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_NAME, "fg-agent-hooks", 0, 0, 0);
	for (;;) {
		ssize_t n = msg_recv(fd, &m);
		if (n == 0)
			_exit(0);       /* the agent is gone */
		if (n < 0) {
			fg_err("hooks", NULL, "hook runner: %s from the agent; stopping",
			       errno == EBADMSG ? "malformed message" : strerror(errno));
			_exit(1);
		}
		char name[sizeof cfg->slots[0].name];
		if (m.h.type != HOOK_RUN || m.h.len == 0 || m.h.len >= sizeof name ||
		    memchr(m.body, '\0', m.h.len) != NULL) {
			reply(fd, m.h.id, -1, "hook runner: malformed request");
			continue;
		}
		memcpy(name, m.body, m.h.len);
		name[m.h.len] = '\0';
		const struct agent_slot *s = agent_config_slot(cfg, name);
		if (s == NULL) {
			char msg[200];
			snprintf(msg, sizeof msg, "the hook runner has no slot '%s' in the configuration read at start; restart the agent",
				 name);
			reply(fd, m.h.id, -1, msg);
			continue;
		}
		char err[HOOK_BODY_MAX - 8] = "";
		int rc = slot_run_hook(s, SLOT_HOOK_TIMEOUT, err, sizeof err);
		reply(fd, m.h.id, rc, rc == 0 ? "" : err);
	}
}

struct hookproc *hookproc_start(const struct agent_config *cfg, void (*child_init)(void *), void *arg,
				char *err, size_t errlen)
{
	int sv[2];
	struct hookproc *h = calloc(1, sizeof *h);
	if (h == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		fg_seterr(err, errlen, "cannot make the hook runner's socketpair: %s", strerror(errno));
		free(h);
		return NULL;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		fg_seterr(err, errlen, "cannot start the hook runner: fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		free(h);
		return NULL;
	}
	if (pid == 0) {
		close(sv[0]);
		if (child_init)
			child_init(arg);
		runner_main(cfg, sv[1]);
		_exit(0);
	}
	close(sv[1]);
	h->fd = sv[0];
	h->pid = pid;
	h->next_id = 1;
	return h;
}

pid_t hookproc_pid(const struct hookproc *h)
{
	return h->pid;
}

int hookproc_run(void *arg, const struct agent_slot *s, int timeout_s, char *err, size_t errlen)
{
	struct hookproc *h = arg;
	struct hook_msg m;
	uint32_t id = h->next_id++;

	if (s->reload[0] == '\0')
		return 0;
	if (h->fd < 0 || msg_send(h->fd, HOOK_RUN, id, s->name, strlen(s->name)) != 0) {
		fg_seterr(err, errlen, "the hook runner (pid %ld) is gone, so the reload command of slot %s did not run; restart the agent",
			  (long)h->pid, s->name);
		return -1;
	}
	/* the runner kills a hook after timeout_s; wait a little longer */
	long left_ms = ((long)timeout_s + HOOK_MARGIN) * 1000;
	for (;;) {
		struct pollfd p = { .fd = h->fd, .events = POLLIN };
		uint64_t t0 = fg_mono_ns();
		int r = poll(&p, 1, (int)left_ms);
		if (r < 0 && errno == EINTR) {
			left_ms -= (long)((fg_mono_ns() - t0) / 1000000u);
			if (left_ms > 0)
				continue;
			r = 0;
		}
		if (r == 0) {
			fg_seterr(err, errlen, "the hook runner did not answer within %d s for slot %s", timeout_s + HOOK_MARGIN,
				  s->name);
			return -1;
		}
		ssize_t n = r > 0 ? msg_recv(h->fd, &m) : -1;
		if (n <= 0) {
			fg_seterr(err, errlen, "the hook runner (pid %ld) is gone (%s), so the reload command of slot %s may not have run; restart the agent",
				  (long)h->pid, n == 0 ? "end of file" : strerror(errno), s->name);
			close(h->fd);
			h->fd = -1;
			return -1;
		}
		if (m.h.type != HOOK_DONE || m.h.len < sizeof(int32_t)) {
			fg_seterr(err, errlen, "the hook runner sent a malformed answer for slot %s", s->name);
			return -1;
		}
		if (m.h.id != id)
			continue;   /* an answer to an earlier request that timed out */
		int32_t rc;
		memcpy(&rc, m.body, sizeof rc);
		if (rc == 0)
			return 0;
		size_t ml = m.h.len - sizeof rc;
		if (errlen > 0) {
			if (ml >= errlen)
				ml = errlen - 1;
			memcpy(err, m.body + sizeof rc, ml);
			err[ml] = '\0';
		}
		return -1;
	}
}

void hookproc_free(struct hookproc *h)
{
	if (h == NULL)
		return;
	if (h->fd >= 0)
		close(h->fd);
	int st;
	while (waitpid(h->pid, &st, 0) < 0 && errno == EINTR)
		;
	free(h);
}
