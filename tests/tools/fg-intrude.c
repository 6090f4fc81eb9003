/*
 * fg-intrude: an LD_PRELOAD library for the sandbox tests, standing in for
 * an attacker who runs code inside a confined fleetgate-agent (after a
 * memory-safety bug in a parser, say). It is built only for the tests and
 * never installed; the agent has no hook for it.
 *
 * It wraps epoll_wait, which the agent first calls from its event loop
 * (or ZeroMQ from its I/O threads), both after the sandbox applies. On the
 * first call it tries, once:
 *   write   create $FG_INTRUDE_WRITE (a path outside the agent's rules)
 *   read    open $FG_INTRUDE_READ (e.g. the gateway's CA key)
 *   exec    run /bin/sh -c true
 *   connect TCP to 127.0.0.1:$FG_INTRUDE_PORT
 *   inside  create $FG_INTRUDE_INSIDE (a path the agent may write)
 * and prints one line per attempt on stderr:
 *   "fg-intrude: write /path: Permission denied" or "...: ok".
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);

static void say(const char *what, const char *target, int e)
{
	fprintf(stderr, "fg-intrude: %s %s: %s\n", what, target, e ? strerror(e) : "ok");
	fflush(stderr);
}

static void try_create(const char *what, const char *path)
{
	if (path == NULL)
		return;
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	say(what, path, fd < 0 ? errno : 0);
	if (fd >= 0)
		close(fd);
}

static void attempts(void)
{
	const char *p;
	try_create("write", getenv("FG_INTRUDE_WRITE"));
	if ((p = getenv("FG_INTRUDE_READ")) != NULL) {
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		say("read", p, fd < 0 ? errno : 0);
		if (fd >= 0)
			close(fd);
	}
	{
		pid_t pid;
		int st = 0;
		char *argv[] = { "sh", "-c", "true", NULL };
		int e = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ);
		if (e == 0 && waitpid(pid, &st, 0) == pid && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			e = WIFEXITED(st) && WEXITSTATUS(st) == 127 ? EACCES : ECHILD;
		say("exec", "/bin/sh", e);
	}
	if ((p = getenv("FG_INTRUDE_PORT")) != NULL) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(p)) };
		char target[64];
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		snprintf(target, sizeof target, "127.0.0.1:%s", p);
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int e = s < 0 ? errno : connect(s, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : errno;
		say("connect", target, e);
		if (s >= 0)
			close(s);
	}
	try_create("inside", getenv("FG_INTRUDE_INSIDE"));
}

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	static atomic_int done;
	static int (*real)(int, struct epoll_event *, int, int);
	if (atomic_exchange(&done, 1) == 0)
		attempts();
	if (real == NULL)
		real = (int (*)(int, struct epoll_event *, int, int))dlsym(RTLD_NEXT, "epoll_wait");
	return real(epfd, events, maxevents, timeout);
}
