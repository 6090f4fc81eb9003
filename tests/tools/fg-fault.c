/*
 * fg-fault.so: an LD_PRELOAD library for the fault tests (tests/fault/,
 * docs/reliability.md), never installed. It makes writes and syncs of
 * chosen files fail as a full or failing disk does, and shifts the wall
 * clock, in a running process, as a test directs.
 *
 * Environment, read once when the library loads (before the program's own
 * sandbox is set up, so nothing here needs a syscall that seccomp or
 * Landlock would refuse later):
 *
 *   FG_FAULT_CTL    a control file of at least 4096 bytes, mapped shared:
 *                   a test changes the fault by writing to the file in
 *                   place (never truncating it; tests/fault/fault.inc.sh)
 *   FG_FAULT_MATCH  ':'-separated substrings; a file opened under a path
 *                   containing one is watched (e.g. "fleetgate.db" for the
 *                   store, its -wal and -journal)
 *
 * The control file: bytes 0-1023 are text, tokens separated by spaces,
 *
 *   op=write|sync|any   which calls on watched files fail: write, pwrite,
 *                       writev (write); fsync, fdatasync (sync)
 *   err=ENOSPC|EIO|EDQUOT   the errno they fail with
 *   skip=N              let the first N matching calls through
 *   count=N             then fail N calls (0: every later call, a disk
 *                       that stays full)
 *   thread=NAME         only calls made by threads whose name (as
 *                       PR_SET_NAME gave it; fleetgated names its
 *                       threads fg-worker, fg-checkpoint, ...) begins
 *                       with NAME are seen and failed
 *   clock=S             add S seconds (may be negative) to CLOCK_REALTIME
 *                       as clock_gettime, gettimeofday and time see it
 *
 * and bytes 1024-1039 two little-endian 64-bit counters the library keeps:
 * matching calls seen and calls failed since the test last zeroed them.
 * A failed call does nothing (the data is not written, nothing is synced).
 */
/* both the plain and the 64-bit names are defined here */
#undef _FILE_OFFSET_BITS
#undef _TIME_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define CTL_SIZE 4096
#define TEXT_SIZE 1024
#define MAX_FD 65536
#define MAX_MATCH 8

enum { OP_NONE, OP_WRITE, OP_SYNC, OP_ANY };

struct fault {
	int op, err;
	unsigned long skip, count;
	long long clock;
	char thread[16];
};

static volatile char *ctl;
static uint64_t *counters;
static char match[MAX_MATCH][256];
static int n_match;
static unsigned char watched[MAX_FD];

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_gettimeofday)(struct timeval *, void *);

/* The next definitions of the wrapped functions; called by every wrapper,
 * as another library's constructor may open a file before ours runs. */
static void resolve(void)
{
	if (real_gettimeofday != NULL)
		return;
	real_open = dlsym(RTLD_NEXT, "open");
	real_open64 = dlsym(RTLD_NEXT, "open64");
	real_openat = dlsym(RTLD_NEXT, "openat");
	real_openat64 = dlsym(RTLD_NEXT, "openat64");
	real_close = dlsym(RTLD_NEXT, "close");
	real_write = dlsym(RTLD_NEXT, "write");
	real_pwrite = dlsym(RTLD_NEXT, "pwrite");
	real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
	real_writev = dlsym(RTLD_NEXT, "writev");
	real_fsync = dlsym(RTLD_NEXT, "fsync");
	real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
	real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
	__atomic_store_n(&real_gettimeofday, dlsym(RTLD_NEXT, "gettimeofday"), __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void fault_init(void)
{
	resolve();
	const char *path = getenv("FG_FAULT_CTL");
	if (path == NULL || path[0] == '\0')
		return;
	int fd = real_open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "fg-fault: cannot open FG_FAULT_CTL %s: %s\n", path, strerror(errno));
		abort();
	}
	void *m = mmap(NULL, CTL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	real_close(fd);
	if (m == MAP_FAILED) {
		fprintf(stderr, "fg-fault: cannot map %s: %s\n", path, strerror(errno));
		abort();
	}
	ctl = m;
	counters = (uint64_t *)((char *)m + TEXT_SIZE);

	const char *ms = getenv("FG_FAULT_MATCH");
	while (ms != NULL && *ms != '\0' && n_match < MAX_MATCH) {
		const char *e = strchr(ms, ':');
		size_t n = e ? (size_t)(e - ms) : strlen(ms);
		if (n > 0 && n < sizeof match[0]) {
			memcpy(match[n_match], ms, n);
			match[n_match][n] = '\0';
			n_match++;
		}
		ms = e ? e + 1 : NULL;
	}
}

/* The fault as the control text says now (a copy: the test may rewrite the
 * text at any moment). */
static void fault_now(struct fault *f)
{
	char text[TEXT_SIZE];

	memset(f, 0, sizeof *f);
	if (ctl == NULL)
		return;
	for (size_t i = 0; i < TEXT_SIZE - 1; i++)
		text[i] = ctl[i];
	text[TEXT_SIZE - 1] = '\0';
	for (char *save = NULL, *t = strtok_r(text, " \t\n", &save); t != NULL;
	     t = strtok_r(NULL, " \t\n", &save)) {
		if (strcmp(t, "op=write") == 0)
			f->op = OP_WRITE;
		else if (strcmp(t, "op=sync") == 0)
			f->op = OP_SYNC;
		else if (strcmp(t, "op=any") == 0)
			f->op = OP_ANY;
		else if (strcmp(t, "err=ENOSPC") == 0)
			f->err = ENOSPC;
		else if (strcmp(t, "err=EIO") == 0)
			f->err = EIO;
		else if (strcmp(t, "err=EDQUOT") == 0)
			f->err = EDQUOT;
		else if (strncmp(t, "skip=", 5) == 0)
			f->skip = strtoul(t + 5, NULL, 10);
		else if (strncmp(t, "count=", 6) == 0)
			f->count = strtoul(t + 6, NULL, 10);
		else if (strncmp(t, "clock=", 6) == 0)
			f->clock = strtoll(t + 6, NULL, 10);
		else if (strncmp(t, "thread=", 7) == 0)
			snprintf(f->thread, sizeof f->thread, "%s", t + 7);
	}
	if (f->err == 0)
		f->err = EIO;
}

static void watch(int fd, const char *path)
{
	if (fd < 0 || fd >= MAX_FD)
		return;
	watched[fd] = 0;
	for (int i = 0; path != NULL && i < n_match; i++)
		if (strstr(path, match[i]) != NULL)
			watched[fd] = 1;
}

/* 1 when this call on fd is to fail (errno set), 0 to let it through. */
static int inject(int fd, int op)
{
	struct fault f;

	if (ctl == NULL || fd < 0 || fd >= MAX_FD || !watched[fd])
		return 0;
	fault_now(&f);
	if (f.op == OP_NONE || (f.op != OP_ANY && f.op != op))
		return 0;
	if (f.thread[0] != '\0') {
		char name[16] = "";
		if (prctl(PR_GET_NAME, name, 0, 0, 0) != 0 ||
		    strncmp(name, f.thread, strlen(f.thread)) != 0)
			return 0;
	}
	uint64_t seen = __atomic_add_fetch(&counters[0], 1, __ATOMIC_SEQ_CST);
	if (seen <= f.skip)
		return 0;
	if (f.count != 0 && __atomic_load_n(&counters[1], __ATOMIC_SEQ_CST) >= f.count)
		return 0;
	__atomic_add_fetch(&counters[1], 1, __ATOMIC_SEQ_CST);
	errno = f.err;
	return 1;
}

static mode_t mode_arg(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

/* The four open calls: the real one, then the new fd watched or not. The
 * mode argument is there only with O_CREAT or O_TMPFILE. */
#define OPEN_WRAPPER(name, real, params, args)                   \
	int name params                                          \
	{                                                        \
		resolve();                                       \
		va_list ap;                                      \
		va_start(ap, flags);                             \
		mode_t mode = mode_arg(flags, ap);               \
		va_end(ap);                                      \
		int fd = real args;                              \
		watch(fd, path);                                 \
		return fd;                                       \
	}

OPEN_WRAPPER(open, real_open, (const char *path, int flags, ...), (path, flags, mode))
OPEN_WRAPPER(open64, real_open64, (const char *path, int flags, ...), (path, flags, mode))
OPEN_WRAPPER(openat, real_openat, (int dirfd, const char *path, int flags, ...), (dirfd, path, flags, mode))
OPEN_WRAPPER(openat64, real_openat64, (int dirfd, const char *path, int flags, ...),
	     (dirfd, path, flags, mode))

int close(int fd)
{
	resolve();
	if (fd >= 0 && fd < MAX_FD)
		watched[fd] = 0;
	return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t len)
{
	resolve();
	return inject(fd, OP_WRITE) ? -1 : real_write(fd, buf, len);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	resolve();
	return inject(fd, OP_WRITE) ? -1 : real_pwrite(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off64_t off)
{
	resolve();
	return inject(fd, OP_WRITE) ? -1 : real_pwrite64(fd, buf, len, off);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
	resolve();
	return inject(fd, OP_WRITE) ? -1 : real_writev(fd, iov, n);
}

int fsync(int fd)
{
	resolve();
	return inject(fd, OP_SYNC) ? -1 : real_fsync(fd);
}

int fdatasync(int fd)
{
	resolve();
	return inject(fd, OP_SYNC) ? -1 : real_fdatasync(fd);
}

static long long clock_shift(void)
{
	struct fault f;
	fault_now(&f);
	return f.clock;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	resolve();
	int r = real_clock_gettime(id, ts);
	if (r == 0 && ctl != NULL && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		ts->tv_sec += clock_shift();
	return r;
}

int gettimeofday(struct timeval *tv, void *tz)
{
	resolve();
	int r = real_gettimeofday(tv, tz);
	if (r == 0 && ctl != NULL)
		tv->tv_sec += clock_shift();
	return r;
}

time_t time(time_t *out)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (out != NULL)
		*out = ts.tv_sec;
	return ts.tv_sec;
}
