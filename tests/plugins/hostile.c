/*
 * hostile.c: a backend plugin built only for the tests (never installed),
 * playing code that an attacker controls inside fleetgated. On each issue
 * request it tries, from inside the daemon, what the sandbox must refuse
 * (docs/security.md), and logs one line per attempt:
 *
 *   hostile: <attempt>: refused (<errno name>)     or
 *   hostile: <attempt>: ALLOWED
 *
 * tests/integration/confine.sh asserts each line. The request is then
 * rejected. Settings: ca_key (path of the CA key to go after), state_dir,
 * and skip = "network,destructive" to leave out the attempts that would
 * reach the network or harm the CA when nothing stops them (the test's
 * unconfined run).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fleetgate/plugin.h>

struct hostile {
	const struct fg_host *host;
	char ca_key[4096];
	char state_dir[4096];
	int skip_network, skip_destructive;
};

static const char *errname(int e)
{
	switch (e) {
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ENETUNREACH: return "ENETUNREACH";
	case EINPROGRESS: return "EINPROGRESS";
	case EXDEV: return "EXDEV";
	default: return strerror(e);
	}
}

/* Log the outcome of one attempt: r < 0 with errno e is a refusal. */
static void report(struct hostile *h, const char *what, int r, int e)
{
	char line[1024];
	if (r < 0)
		snprintf(line, sizeof line, "hostile: %s: refused (%s)", what, errname(e));
	else
		snprintf(line, sizeof line, "hostile: %s: ALLOWED", what);
	h->host->log(h->host->ctx, FG_LEVEL_WARN, NULL, line);
}

static void try_open(struct hostile *h, const char *what, const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC, 0600);
	int e = errno;
	report(h, what, fd, e);
	if (fd >= 0)
		close(fd);
}

/* The pid of a child of this process's main thread (the signer's
 * monitor), from /proc/self/task/<pid>/children; 0 when none. */
static int a_child(void)
{
	char path[64], buf[256] = "";
	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return 0;
	if (fgets(buf, sizeof buf, f) == NULL)
		buf[0] = '\0';
	fclose(f);
	return atoi(buf);
}

static void attempts(struct hostile *h)
{
	char path[8192];

	/* The CA key, directly, through /proc, and by removing or moving it. */
	try_open(h, "open the CA key", h->ca_key, O_RDONLY);
	snprintf(path, sizeof path, "/proc/self/root%s", h->ca_key);
	try_open(h, "open the CA key through /proc/self/root", path, O_RDONLY);
	int child = a_child();
	if (child > 0) {
		snprintf(path, sizeof path, "/proc/%d/root%s", child, h->ca_key);
		try_open(h, "open the CA key through the monitor's /proc root", path, O_RDONLY);
		snprintf(path, sizeof path, "/proc/%d/mem", child);
		try_open(h, "read the monitor's memory through /proc", path, O_RDONLY);
		/* Signal 0 asks the kernel whether a signal would be let
		 * through, without sending one. */
		int kr = kill(child, 0);
		report(h, "signal the monitor", kr, errno);
	} else {
		h->host->log(h->host->ctx, FG_LEVEL_WARN, NULL, "hostile: no child process found in /proc/self/task");
	}
	int r;
	char *slash = strrchr(h->ca_key, '/');
	if (!h->skip_destructive) {
		r = unlink(h->ca_key);
		report(h, "remove the CA key", r, errno);
	}
	if (slash != NULL && !h->skip_destructive) {
		char dir[4096], moved[4200];
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - h->ca_key), h->ca_key);
		snprintf(moved, sizeof moved, "%s.stolen", dir);
		r = rename(dir, moved);
		report(h, "move the CA directory", r, errno);
		DIR *d = opendir(dir);
		report(h, "list the CA directory", d ? 0 : -1, errno);
		if (d != NULL)
			closedir(d);
	}

	/* Writes outside what the daemon must write. */
	try_open(h, "write a file in /tmp", "/tmp/fleetgate-hostile-was-here", O_WRONLY | O_CREAT | O_TRUNC);
	snprintf(path, sizeof path, "%s/hostile-was-here", h->state_dir);
	try_open(h, "write a file at the top of the state directory", path, O_WRONLY | O_CREAT | O_TRUNC);
	snprintf(path, sizeof path, "%s/policy.lua", h->state_dir);
	try_open(h, "write the policy", path, O_WRONLY | O_APPEND);
	snprintf(path, sizeof path, "%s/fleetgated.conf", h->state_dir);
	try_open(h, "read the configuration again", path, O_RDONLY);

	/* The network beyond the backends: a TCP connection to a documentation
	 * address (192.0.2.1, RFC 5737), non-blocking, so that a sandbox that
	 * let it through would show as EINPROGRESS rather than a hang. */
	int s = h->skip_network ? -1 : socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(443) };
	inet_pton(AF_INET, "192.0.2.1", &sa.sin_addr);
	if (s >= 0) {
		r = connect(s, (struct sockaddr *)&sa, sizeof sa);
		int e = errno;
		report(h, "connect to 192.0.2.1:443", r < 0 && e == EINPROGRESS ? 0 : r, e);
		close(s);
	}
	s = h->skip_network ? -1 : socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = htons(2222) };
	if (s >= 0) {
		r = bind(s, (struct sockaddr *)&any, sizeof any);
		report(h, "listen on port 2222", r, errno);
		close(s);
	}

	/* A shell through the hook runner: it runs configured hooks only. */
	if (FG_HOST_HAS_RUN_HOOK(h->host)) {
		char out[256], herr[512] = "";
		const char *env[] = { NULL };
		r = h->host->run_hook(h->host->ctx, "/bin/sh", "present", env, 5, out, sizeof out, herr, sizeof herr);
		report(h, "run /bin/sh through the hook runner", r, EPERM);
		if (r != 0)
			h->host->log(h->host->ctx, FG_LEVEL_WARN, NULL, herr);
	}

	/* A shell. */
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			char *argv[] = { "sh", "-c", "exit 0", NULL };
			execv("/bin/sh", argv);
			int ce = errno;
			if (write(pfd[1], &ce, sizeof ce) != (ssize_t)sizeof ce)
				_exit(2);
			_exit(1);
		}
		close(pfd[1]);
		int ce = 0;
		ssize_t n = pid > 0 ? read(pfd[0], &ce, sizeof ce) : -1;
		close(pfd[0]);
		if (pid > 0)
			waitpid(pid, NULL, 0);
		report(h, "exec /bin/sh", n == (ssize_t)sizeof ce ? -1 : 0, ce);
	}
}

static void h_close(void *state)
{
	free(state);
}

static int h_open(const struct fg_host *host, const struct fg_kv *settings, size_t n, void **state, char *err,
		  size_t errlen)
{
	const char *k = fg_kv_get(settings, n, "ca_key"), *sd = fg_kv_get(settings, n, "state_dir");
	struct hostile *h = calloc(1, sizeof *h);
	if (h == NULL || k == NULL || sd == NULL) {
		snprintf(err, errlen, "hostile: needs ca_key and state_dir");
		free(h);
		return -1;
	}
	h->host = host;
	const char *skip = fg_kv_get(settings, n, "skip");
	h->skip_network = skip != NULL && strstr(skip, "network") != NULL;
	h->skip_destructive = skip != NULL && strstr(skip, "destructive") != NULL;
	snprintf(h->ca_key, sizeof h->ca_key, "%s", k);
	snprintf(h->state_dir, sizeof h->state_dir, "%s", sd);
	*state = h;
	return 0;
}

static int h_issue(void *state, const struct fg_issue_request *req, struct fg_issue_result *res)
{
	(void)req;
	attempts(state);
	res->status = FG_ISSUE_REJECTED;
	snprintf(res->message, sizeof res->message, "the hostile test plugin issues nothing");
	return 0;
}

static int h_revoke(void *state, const unsigned char *der, size_t len, enum fg_revoke_reason reason, char *err,
		    size_t errlen)
{
	(void)state, (void)der, (void)len, (void)reason;
	snprintf(err, errlen, "the hostile test plugin revokes nothing");
	return -1;
}

static int h_cacerts(void *state, struct fg_cert_list *out, char *err, size_t errlen)
{
	(void)state, (void)out;
	snprintf(err, errlen, "the hostile test plugin has no CA");
	return -1;
}

static const struct fg_backend_ops ops = {
	.abi_version = FG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct fg_backend_ops),
	.name = "hostile",
	.description = "tests only: tries what the daemon's sandbox must refuse",
	.open = h_open,
	.issue = h_issue,
	.revoke = h_revoke,
	.cacerts = h_cacerts,
	.close = h_close,
};

__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void);
const struct fg_backend_ops *fg_backend_v1(void)
{
	return &ops;
}
