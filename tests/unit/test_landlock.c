/*
 * Unit tests for lib/landlock.c: a child process applies a ruleset and
 * tries what it allows and what it does not; the kernel's answers (errno of
 * each attempt) come back through a pipe and are checked here. A sandbox
 * that did not apply shows up as a forbidden attempt that succeeded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "fg_landlock.h"
#include "fg_log.h"

extern char **environ;

static char tmpdir[64];

static int setup(void **state)
{
	char p[128], cmd[256];
	(void)state;
	strcpy(tmpdir, "/tmp/fg-ll.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(p, sizeof p, "%s/rw", tmpdir);
	mkdir(p, 0700);
	snprintf(cmd, sizeof cmd, "echo ro > '%s/ro.txt' && echo secret > '%s/secret' && cp /usr/bin/true '%s/rw/true'",
		 tmpdir, tmpdir, tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* What the child tried; each gets the errno it ended with, 0 for success. */
enum probe {
	P_CREATE_RW,       /* create a file in the read-write directory */
	P_RENAME_RW,       /* rename it there (atomic install) */
	P_UNLINK_RW,       /* remove it */
	P_READ_RO,         /* read the read-only file */
	P_WRITE_RO,        /* open the read-only file for writing: EACCES */
	P_READ_SECRET,     /* read a file not listed: EACCES */
	P_CREATE_OUTSIDE,  /* create a file next to it: EACCES */
	P_EXEC_ALLOWED,    /* run /usr/bin/true (under an execute rule) */
	P_EXEC_RW,         /* run a copy in the read-write directory: EACCES */
	P_CONNECT_OK,      /* TCP connect to the allowed port */
	P_CONNECT_OTHER,   /* TCP connect to another listening port: EACCES */
	P_BIND_OK,         /* bind the allowed port */
	P_BIND_OTHER,      /* bind another port: EACCES */
	P_NNP,             /* 1 when PR_GET_NO_NEW_PRIVS says so */
	P_APPLY,           /* fg_landlock_apply's return */
	P_MAX
};

struct result {
	int r[P_MAX];
	char desc[512];
	char err[1024];
};

static int e_of(int rc)
{
	return rc < 0 ? errno : 0;
}

static int try_open(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

static int try_spawn(const char *path)
{
	pid_t pid;
	int st = 0;
	char *argv[] = { (char *)path, NULL };
	int e = posix_spawn(&pid, path, NULL, NULL, argv, environ);
	if (e != 0)
		return e;
	if (waitpid(pid, &st, 0) != pid)
		return errno;
	/* glibc reports a failed exec as the spawn's error; 127 is the
	 * fallback of older versions */
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : WIFEXITED(st) && WEXITSTATUS(st) == 127 ? EACCES : -1;
}

static int try_connect(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int e = s < 0 ? errno : e_of(connect(s, (struct sockaddr *)&a, sizeof a));
	if (s >= 0)
		close(s);
	return e;
}

static int try_bind(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	int e = s < 0 ? errno : e_of(bind(s, (struct sockaddr *)&a, sizeof a));
	if (s >= 0)
		close(s);
	return e;
}

/* A TCP socket on 127.0.0.1, bound to a free port; listening if asked. */
static int tcp_socket(int do_listen, uint16_t *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof a;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
	    (do_listen && listen(s, 4) != 0) || getsockname(s, (struct sockaddr *)&a, &al) != 0)
		return -1;
	*port = ntohs(a.sin_port);
	return s;
}

/* Make landlock_create_ruleset fail with ENOSYS in this process, as on a
 * kernel without Landlock: a seccomp filter (after no_new_privs). */
static int hide_landlock(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_landlock_create_ruleset, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

enum scenario { SC_FULL, SC_OFF, SC_NO_LANDLOCK_REQUIRED, SC_NO_LANDLOCK_BEST_EFFORT, SC_MAX };

/*
 * The child: a ruleset with a read-write directory, a read-only file,
 * /usr executable, TCP connect to one listening port and bind on one free
 * port; apply it (per scenario), then try everything.
 */
static void child(enum scenario sc, int abi, int wfd)
{
	struct result res;
	char p[256], q[256], err[1024] = "";
	uint16_t lport = 0, lother = 0, bport = 0, bother = 0;
	int net = abi >= 4;

	memset(&res, 0, sizeof res);
	int l1 = tcp_socket(1, &lport), l2 = tcp_socket(1, &lother);
	int b1 = tcp_socket(0, &bport), b2 = tcp_socket(0, &bother);
	close(b1);
	close(b2);
	if (l1 < 0 || l2 < 0 || b1 < 0 || b2 < 0)
		_exit(3);
	if ((sc == SC_NO_LANDLOCK_REQUIRED || sc == SC_NO_LANDLOCK_BEST_EFFORT) && hide_landlock() != 0)
		_exit(4);

	struct fg_landlock *ll = fg_landlock_new();
	snprintf(p, sizeof p, "%s/rw", tmpdir);
	fg_landlock_add_path(ll, p, FG_LL_RW_DIR, 0);
	snprintf(p, sizeof p, "%s/ro.txt", tmpdir);
	fg_landlock_add_path(ll, p, FG_LL_READ, 0);
	fg_landlock_add_path(ll, "/usr", FG_LL_EXEC, 0);
	fg_landlock_add_path(ll, "/nonexistent/fg-optional", FG_LL_READ, FG_LL_OPTIONAL);
	if (net) {
		fg_landlock_allow_connect(ll, lport);
		fg_landlock_allow_bind(ll, bport);
	}
	enum fg_sandbox_mode mode = sc == SC_OFF ? FG_SANDBOX_OFF
		: sc == SC_NO_LANDLOCK_BEST_EFFORT ? FG_SANDBOX_BEST_EFFORT : FG_SANDBOX_REQUIRED;
	res.r[P_APPLY] = fg_landlock_apply(ll, mode, err, sizeof err);
	snprintf(res.desc, sizeof res.desc, "%s", fg_landlock_describe(ll));
	snprintf(res.err, sizeof res.err, "%s", err);
	fg_landlock_free(ll);

	snprintf(p, sizeof p, "%s/rw/new.tmp", tmpdir);
	snprintf(q, sizeof q, "%s/rw/new", tmpdir);
	res.r[P_CREATE_RW] = try_open(p, O_WRONLY | O_CREAT | O_EXCL);
	res.r[P_RENAME_RW] = e_of(rename(p, q));
	res.r[P_UNLINK_RW] = e_of(unlink(q));
	snprintf(p, sizeof p, "%s/ro.txt", tmpdir);
	res.r[P_READ_RO] = try_open(p, O_RDONLY);
	res.r[P_WRITE_RO] = try_open(p, O_WRONLY);
	snprintf(p, sizeof p, "%s/secret", tmpdir);
	res.r[P_READ_SECRET] = try_open(p, O_RDONLY);
	snprintf(p, sizeof p, "%s/outside", tmpdir);
	res.r[P_CREATE_OUTSIDE] = try_open(p, O_WRONLY | O_CREAT);
	res.r[P_EXEC_ALLOWED] = try_spawn("/usr/bin/true");
	snprintf(p, sizeof p, "%s/rw/true", tmpdir);
	res.r[P_EXEC_RW] = try_spawn(p);
	if (net) {
		res.r[P_CONNECT_OK] = try_connect(lport);
		res.r[P_CONNECT_OTHER] = try_connect(lother);
		res.r[P_BIND_OK] = try_bind(bport);
		res.r[P_BIND_OTHER] = try_bind(bother);
	}
	res.r[P_NNP] = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
	if (write(wfd, &res, sizeof res) != (ssize_t)sizeof res)
		_exit(5);
	_exit(0);
}

static void run(enum scenario sc, int abi, struct result *res)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		child(sc, abi, fds[1]);
	}
	close(fds[1]);
	ssize_t n = read(fds[0], res, sizeof *res);
	close(fds[0]);
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("child ended with status 0x%x", st);
	assert_int_equal(n, (ssize_t)sizeof *res);
}

static int abi_or_skip(void)
{
	int abi = fg_landlock_abi();
	if (abi < 1) {
		print_message("this kernel has no Landlock (%s): skipped\n", strerror(errno));
		skip();
	}
	return abi;
}

/* required: what is listed works, everything else is EACCES. */
static void test_confined(void **state)
{
	struct result r;
	(void)state;
	int abi = abi_or_skip();
	run(SC_FULL, abi, &r);
	if (r.r[P_APPLY] != 0)
		fail_msg("apply failed: %s", r.err);
	assert_int_equal(r.r[P_NNP], 1);
	assert_non_null(strstr(r.desc, "landlock ABI"));
	assert_non_null(strstr(r.desc, "3 paths (1 absent)"));
	assert_non_null(strstr(r.desc, "no_new_privs"));

	assert_int_equal(r.r[P_CREATE_RW], 0);
	assert_int_equal(r.r[P_RENAME_RW], 0);
	assert_int_equal(r.r[P_UNLINK_RW], 0);
	assert_int_equal(r.r[P_READ_RO], 0);
	assert_int_equal(r.r[P_EXEC_ALLOWED], 0);

	assert_int_equal(r.r[P_WRITE_RO], EACCES);
	assert_int_equal(r.r[P_READ_SECRET], EACCES);
	assert_int_equal(r.r[P_CREATE_OUTSIDE], EACCES);
	assert_int_equal(r.r[P_EXEC_RW], EACCES);
	if (abi >= 4) {
		assert_non_null(strstr(r.desc, "tcp connect 1 port, bind 1 port"));
		assert_int_equal(r.r[P_CONNECT_OK], 0);
		assert_int_equal(r.r[P_BIND_OK], 0);
		assert_int_equal(r.r[P_CONNECT_OTHER], EACCES);
		assert_int_equal(r.r[P_BIND_OTHER], EACCES);
	} else {
		print_message("Landlock ABI %d < 4: TCP rules not tested\n", abi);
	}
}

/* off: nothing applies (the same attempts succeed). */
static void test_off(void **state)
{
	struct result r;
	(void)state;
	int abi = fg_landlock_abi();
	run(SC_OFF, abi, &r);
	assert_int_equal(r.r[P_APPLY], 0);
	assert_string_equal(r.desc, "off (nothing applied)");
	assert_int_equal(r.r[P_NNP], 0);
	assert_int_equal(r.r[P_READ_SECRET], 0);
	assert_int_equal(r.r[P_CREATE_OUTSIDE], 0);
	assert_int_equal(r.r[P_EXEC_RW], 0);
	if (abi >= 4)
		assert_int_equal(r.r[P_CONNECT_OTHER], 0);
}

/* A kernel without Landlock (the probe gets ENOSYS): required refuses and
 * says how to choose best-effort; best-effort goes on with no_new_privs
 * only, and says so. */
static void test_no_landlock(void **state)
{
	struct result r;
	(void)state;
	int abi = fg_landlock_abi();
	run(SC_NO_LANDLOCK_REQUIRED, abi, &r);
	assert_int_equal(r.r[P_APPLY], -1);
	assert_non_null(strstr(r.err, "this kernel has no Landlock"));
	assert_non_null(strstr(r.err, "sandbox = best-effort"));

	run(SC_NO_LANDLOCK_BEST_EFFORT, abi, &r);
	assert_int_equal(r.r[P_APPLY], 0);
	assert_string_equal(r.desc, "landlock unavailable; no_new_privs");
	assert_int_equal(r.r[P_NNP], 1);
	assert_int_equal(r.r[P_READ_SECRET], 0);
}

static void *idle_thread(void *arg)
{
	int *fd = arg;
	char c;
	return read(*fd, &c, 1) < 0 ? NULL : NULL;
}

/* Landlock binds the calling thread only: applying with another thread
 * running is refused rather than leaving that thread free. */
static void test_threads_refused(void **state)
{
	(void)state;
	abi_or_skip();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fds[2];
		pthread_t t;
		char err[512] = "";
		if (pipe(fds) != 0 || pthread_create(&t, NULL, idle_thread, &fds[0]) != 0)
			_exit(3);
		struct fg_landlock *ll = fg_landlock_new();
		fg_landlock_add_path(ll, "/usr", FG_LL_READ, 0);
		int rc = fg_landlock_apply(ll, FG_SANDBOX_REQUIRED, err, sizeof err);
		_exit(rc == -1 && strstr(err, "2 threads already run") ? 0 : 1);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* A listed path that does not exist (and is not optional) is an error in
 * every mode: the program's list is wrong. */
static void test_missing_path(void **state)
{
	(void)state;
	abi_or_skip();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[512] = "";
		struct fg_landlock *ll = fg_landlock_new();
		fg_landlock_add_path(ll, "/nonexistent/fg-required", FG_LL_READ, 0);
		int rc = fg_landlock_apply(ll, FG_SANDBOX_BEST_EFFORT, err, sizeof err);
		_exit(rc == -1 && strstr(err, "/nonexistent/fg-required") && strstr(err, "No such file") ? 0 : 1);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_mode_parse(void **state)
{
	(void)state;
	assert_int_equal(fg_sandbox_mode_parse("required"), FG_SANDBOX_REQUIRED);
	assert_int_equal(fg_sandbox_mode_parse("\"required\""), FG_SANDBOX_REQUIRED);
	assert_int_equal(fg_sandbox_mode_parse("best-effort"), FG_SANDBOX_BEST_EFFORT);
	assert_int_equal(fg_sandbox_mode_parse("best_effort"), FG_SANDBOX_BEST_EFFORT);
	assert_int_equal(fg_sandbox_mode_parse("off"), FG_SANDBOX_OFF);
	assert_int_equal(fg_sandbox_mode_parse("on"), -1);
	assert_int_equal(fg_sandbox_mode_parse(""), -1);
	assert_string_equal(fg_sandbox_mode_name(FG_SANDBOX_BEST_EFFORT), "best-effort");
	struct fg_landlock *ll = fg_landlock_new();
	assert_non_null(ll);
	assert_string_equal(fg_landlock_describe(ll), "not applied");
	assert_int_equal(fg_landlock_add_path(ll, "", FG_LL_READ, 0), -1);
	assert_int_equal(fg_landlock_add_path(ll, "/x", FG_LL_ACCESS_MAX, 0), -1);
	fg_landlock_free(ll);
	fg_landlock_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mode_parse),
		cmocka_unit_test(test_confined),
		cmocka_unit_test(test_off),
		cmocka_unit_test(test_no_landlock),
		cmocka_unit_test(test_threads_refused),
		cmocka_unit_test(test_missing_path),
	};
	fg_log_init("test_landlock", FG_LOG_ERROR, FG_LOG_TEXT);
	return cmocka_run_group_tests(tests, setup, teardown);
}
