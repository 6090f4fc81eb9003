/*
 * landlock.c: Landlock rulesets and no_new_privs (see fg_landlock.h).
 *
 * The kernel interface is three system calls (landlock_create_ruleset,
 * landlock_add_rule, landlock_restrict_self) called through syscall(2);
 * the constants and structures are defined here rather than taken from
 * <linux/landlock.h>, because older headers (Debian 12's) stop at ABI 2
 * while the kernel the program runs on may offer more. Each right is masked
 * to what the probed ABI handles: asking an older kernel for a newer right
 * is EINVAL.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fg_landlock.h"
#include "fg_log.h"
#include "fg_util.h"

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_add_rule
#define __NR_landlock_add_rule 445
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif

/* include/uapi/linux/landlock.h, as of ABI 7 */
#define LL_CREATE_RULESET_VERSION (1u << 0)
#define LL_RULE_PATH_BENEATH 1
#define LL_RULE_NET_PORT 2

#define LL_FS_EXECUTE     (1ull << 0)
#define LL_FS_WRITE_FILE  (1ull << 1)
#define LL_FS_READ_FILE   (1ull << 2)
#define LL_FS_READ_DIR    (1ull << 3)
#define LL_FS_REMOVE_DIR  (1ull << 4)
#define LL_FS_REMOVE_FILE (1ull << 5)
#define LL_FS_MAKE_CHAR   (1ull << 6)
#define LL_FS_MAKE_DIR    (1ull << 7)
#define LL_FS_MAKE_REG    (1ull << 8)
#define LL_FS_MAKE_SOCK   (1ull << 9)
#define LL_FS_MAKE_FIFO   (1ull << 10)
#define LL_FS_MAKE_BLOCK  (1ull << 11)
#define LL_FS_MAKE_SYM    (1ull << 12)
#define LL_FS_REFER       (1ull << 13)  /* ABI 2 */
#define LL_FS_TRUNCATE    (1ull << 14)  /* ABI 3 */
#define LL_FS_IOCTL_DEV   (1ull << 15)  /* ABI 5 */

#define LL_NET_BIND_TCP    (1ull << 0)  /* ABI 4 */
#define LL_NET_CONNECT_TCP (1ull << 1)  /* ABI 4 */

#define LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ull << 0)  /* ABI 6 */
#define LL_SCOPE_SIGNAL               (1ull << 1)  /* ABI 6 */

struct ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;    /* ABI 4 */
	uint64_t scoped;                /* ABI 6 */
};

struct ll_path_beneath_attr {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

struct ll_net_port_attr {
	uint64_t allowed_access;
	uint64_t port;
};

/* Rights that apply to a file (not a directory): anything else on a file
 * rule is EINVAL. */
#define LL_FS_FILE_RIGHTS (LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)

/* The access classes of fg_landlock.h as rights. */
static const uint64_t class_rights[FG_LL_ACCESS_MAX] = {
	[FG_LL_READ] = LL_FS_READ_FILE | LL_FS_READ_DIR,
	[FG_LL_RW_FILE] = LL_FS_READ_FILE | LL_FS_WRITE_FILE | LL_FS_TRUNCATE,
	[FG_LL_RW_DIR] = LL_FS_READ_FILE | LL_FS_READ_DIR | LL_FS_WRITE_FILE | LL_FS_TRUNCATE |
			 LL_FS_MAKE_REG | LL_FS_MAKE_DIR | LL_FS_REMOVE_FILE | LL_FS_REMOVE_DIR |
			 LL_FS_REFER,
	[FG_LL_EXEC] = LL_FS_EXECUTE | LL_FS_READ_FILE | LL_FS_READ_DIR,
};

static const char *const class_names[FG_LL_ACCESS_MAX] = {
	[FG_LL_READ] = "read", [FG_LL_RW_FILE] = "read-write file",
	[FG_LL_RW_DIR] = "read-write directory", [FG_LL_EXEC] = "execute",
};

/* Everything the kernel of each ABI can restrict on the file system. */
static uint64_t fs_handled(int abi)
{
	uint64_t r = (LL_FS_MAKE_SYM << 1) - 1;   /* ABI 1: bits 0..12 */
	if (abi >= 2)
		r |= LL_FS_REFER;
	if (abi >= 3)
		r |= LL_FS_TRUNCATE;
	if (abi >= 5)
		r |= LL_FS_IOCTL_DEV;
	return r;
}

struct ll_path {
	char *path;
	enum fg_ll_access acc;
	unsigned flags;
};

struct ll_port {
	uint16_t port;
	uint64_t access;   /* LL_NET_* */
};

struct fg_landlock {
	struct ll_path *paths;
	size_t npaths;
	struct ll_port *ports;
	size_t nports;
	int tcp;            /* TCP is governed */
	unsigned scopes;    /* FG_LL_SCOPE_* asked for */
	int applied;
	char desc[512];
};

int fg_sandbox_mode_parse(const char *s)
{
	char buf[32];
	size_t n = strlen(s);
	if (n >= 2 && n < sizeof buf && s[0] == '"' && s[n - 1] == '"') {
		memcpy(buf, s + 1, n - 2);
		buf[n - 2] = '\0';
		s = buf;
	}
	if (strcmp(s, "required") == 0)
		return FG_SANDBOX_REQUIRED;
	if (strcmp(s, "best-effort") == 0 || strcmp(s, "best_effort") == 0)
		return FG_SANDBOX_BEST_EFFORT;
	if (strcmp(s, "off") == 0)
		return FG_SANDBOX_OFF;
	return -1;
}

const char *fg_sandbox_mode_name(enum fg_sandbox_mode m)
{
	switch (m) {
	case FG_SANDBOX_REQUIRED: return "required";
	case FG_SANDBOX_BEST_EFFORT: return "best-effort";
	case FG_SANDBOX_OFF: return "off";
	default: return "?";
	}
}

struct fg_landlock *fg_landlock_new(void)
{
	struct fg_landlock *ll = calloc(1, sizeof *ll);
	if (ll != NULL)
		fg_strlcpy(ll->desc, "not applied", sizeof ll->desc);
	return ll;
}

void fg_landlock_free(struct fg_landlock *ll)
{
	if (ll == NULL)
		return;
	for (size_t i = 0; i < ll->npaths; i++)
		free(ll->paths[i].path);
	free(ll->paths);
	free(ll->ports);
	free(ll);
}

int fg_landlock_add_path(struct fg_landlock *ll, const char *path, enum fg_ll_access acc,
			 unsigned flags)
{
	if (acc < 0 || acc >= FG_LL_ACCESS_MAX || path == NULL || path[0] == '\0' ||
	    strlen(path) >= PATH_MAX)
		return -1;
	struct ll_path *np = realloc(ll->paths, (ll->npaths + 1) * sizeof *np);
	if (np == NULL)
		return -1;
	ll->paths = np;
	if ((np[ll->npaths].path = strdup(path)) == NULL)
		return -1;
	np[ll->npaths].acc = acc;
	np[ll->npaths].flags = flags;
	ll->npaths++;
	return 0;
}

void fg_landlock_restrict_tcp(struct fg_landlock *ll)
{
	ll->tcp = 1;
}

static int add_port(struct fg_landlock *ll, uint16_t port, uint64_t access)
{
	ll->tcp = 1;
	for (size_t i = 0; i < ll->nports; i++)
		if (ll->ports[i].port == port) {
			ll->ports[i].access |= access;
			return 0;
		}
	struct ll_port *np = realloc(ll->ports, (ll->nports + 1) * sizeof *np);
	if (np == NULL)
		return -1;
	ll->ports = np;
	np[ll->nports].port = port;
	np[ll->nports].access = access;
	ll->nports++;
	return 0;
}

int fg_landlock_allow_connect(struct fg_landlock *ll, uint16_t port)
{
	return add_port(ll, port, LL_NET_CONNECT_TCP);
}

int fg_landlock_allow_bind(struct fg_landlock *ll, uint16_t port)
{
	return add_port(ll, port, LL_NET_BIND_TCP);
}

void fg_landlock_scope(struct fg_landlock *ll, unsigned scopes)
{
	ll->scopes |= scopes & (FG_LL_SCOPE_SIGNAL | FG_LL_SCOPE_ABSTRACT_UNIX);
}

const char *fg_landlock_describe(const struct fg_landlock *ll)
{
	return ll->desc;
}

int fg_landlock_abi(void)
{
	long r = syscall(__NR_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
	return r < 0 ? 0 : (int)r;
}

/* The number of threads of this process (entries of /proc/self/task), or
 * -1 when it cannot be told. */
static int thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/*
 * A facility the mode asks for is missing. Required: err says so, with the
 * way out, and the caller fails. Best-effort: a warning, and the caller goes
 * on without it. 0 go on, -1 fail.
 */
static int missing(enum fg_sandbox_mode mode, char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int missing(enum fg_sandbox_mode mode, char *err, size_t errlen, const char *fmt, ...)
{
	char what[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (mode == FG_SANDBOX_REQUIRED) {
		fg_seterr(err, errlen, "sandbox = required, but %s; run on a kernel that has it, or set sandbox = best-effort to run without it",
			  what);
		return -1;
	}
	fg_warn("sandbox", NULL, "sandbox = best-effort: %s; going on without it", what);
	return 0;
}

/* Append to the description. */
static void desc_add(struct fg_landlock *ll, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void desc_add(struct fg_landlock *ll, const char *fmt, ...)
{
	size_t n = strlen(ll->desc);
	va_list ap;
	if (n >= sizeof ll->desc - 1)
		return;
	va_start(ap, fmt);
	vsnprintf(ll->desc + n, sizeof ll->desc - n, fmt, ap);
	va_end(ap);
}

/* Add every path rule to the ruleset fd. *added and *absent count them. 0,
 * or -1 with err (a path that cannot be opened and is not optional, or a
 * rule the kernel refuses: both are errors in every mode, since they mean
 * the program's own list is wrong). */
static int add_path_rules(struct fg_landlock *ll, int rfd, uint64_t handled, size_t *added,
			  size_t *absent, char *err, size_t errlen)
{
	for (size_t i = 0; i < ll->npaths; i++) {
		const struct ll_path *p = &ll->paths[i];
		struct ll_path_beneath_attr pb;
		struct stat sb;
		int fd = open(p->path, O_PATH | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT && (p->flags & FG_LL_OPTIONAL)) {
				(*absent)++;
				continue;
			}
			fg_seterr(err, errlen, "sandbox: cannot open %s to allow %s access: %s", p->path,
				  class_names[p->acc], strerror(errno));
			return -1;
		}
		if (fstat(fd, &sb) != 0) {
			fg_seterr(err, errlen, "sandbox: cannot stat %s: %s", p->path, strerror(errno));
			close(fd);
			return -1;
		}
		memset(&pb, 0, sizeof pb);
		pb.allowed_access = class_rights[p->acc] & handled;
		if (!S_ISDIR(sb.st_mode))
			pb.allowed_access &= LL_FS_FILE_RIGHTS;
		pb.parent_fd = fd;
		if (pb.allowed_access != 0 &&
		    syscall(__NR_landlock_add_rule, rfd, LL_RULE_PATH_BENEATH, &pb, 0) != 0) {
			fg_seterr(err, errlen, "sandbox: landlock_add_rule for %s (%s): %s", p->path,
				  class_names[p->acc], strerror(errno));
			close(fd);
			return -1;
		}
		close(fd);
		(*added)++;
	}
	return 0;
}

static int add_port_rules(struct fg_landlock *ll, int rfd, size_t *nconnect, size_t *nbind, char *err,
			  size_t errlen)
{
	for (size_t i = 0; i < ll->nports; i++) {
		struct ll_net_port_attr np;
		memset(&np, 0, sizeof np);
		np.allowed_access = ll->ports[i].access;
		np.port = ll->ports[i].port;
		if (syscall(__NR_landlock_add_rule, rfd, LL_RULE_NET_PORT, &np, 0) != 0) {
			fg_seterr(err, errlen, "sandbox: landlock_add_rule for TCP port %u: %s",
				  (unsigned)np.port, strerror(errno));
			return -1;
		}
		if (np.allowed_access & LL_NET_CONNECT_TCP)
			(*nconnect)++;
		if (np.allowed_access & LL_NET_BIND_TCP)
			(*nbind)++;
	}
	return 0;
}

/*
 * The order matters: no_new_privs first (landlock_restrict_self needs it
 * without CAP_SYS_ADMIN, and it must hold even where Landlock does not),
 * then the probe, the ruleset, its rules, and restrict_self last, so that
 * the process is either confined by the whole list or, on error, told so.
 */
int fg_landlock_apply(struct fg_landlock *ll, enum fg_sandbox_mode mode, char *err, size_t errlen)
{
	struct ll_ruleset_attr attr;
	size_t attr_size, added = 0, absent = 0, nconnect = 0, nbind = 0;
	int rfd = -1, rc = -1;

	ll->desc[0] = '\0';
	if (mode == FG_SANDBOX_OFF) {
		fg_strlcpy(ll->desc, "off (nothing applied)", sizeof ll->desc);
		ll->applied = 1;
		return 0;
	}
	if (mode != FG_SANDBOX_REQUIRED && mode != FG_SANDBOX_BEST_EFFORT) {
		fg_seterr(err, errlen, "sandbox: unknown mode %d", (int)mode);
		return -1;
	}
	if (ll->applied) {
		fg_seterr(err, errlen, "sandbox: this ruleset was applied already");
		return -1;
	}
	int nt = thread_count();
	if (nt != 1) {
		/* Landlock and no_new_privs bind the calling thread only */
		if (nt > 1)
			fg_seterr(err, errlen, "sandbox: %d threads already run; the sandbox must be applied before the first thread starts (a program error)",
				  nt);
		else
			fg_seterr(err, errlen, "sandbox: cannot count this process's threads in /proc/self/task: %s; is /proc mounted?",
				  strerror(errno));
		return -1;
	}

	int nnp = 1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
		if (missing(mode, err, errlen, "prctl(PR_SET_NO_NEW_PRIVS) failed: %s", strerror(errno)) != 0)
			return -1;
		nnp = 0;
	}

	int abi = fg_landlock_abi();
	if (abi < 1) {
		int e = errno;
		const char *why = e == EOPNOTSUPP ? "Landlock is built into this kernel but not enabled (add landlock to the lsm= boot parameter)"
			: e == ENOSYS ? "this kernel has no Landlock (Linux 5.13 or later with CONFIG_SECURITY_LANDLOCK)"
			: "the Landlock probe failed";
		if (missing(mode, err, errlen, "%s (landlock_create_ruleset: %s)", why, strerror(e)) != 0)
			return -1;
		desc_add(ll, "landlock unavailable%s", nnp ? "; no_new_privs" : "");
		ll->applied = 1;
		return 0;
	}

	uint64_t handled = fs_handled(abi);
	memset(&attr, 0, sizeof attr);
	attr.handled_access_fs = handled;
	attr_size = sizeof attr.handled_access_fs;
	int tcp = 0;
	if (ll->tcp && abi < 4) {
		if (missing(mode, err, errlen, "Landlock ABI %d cannot restrict TCP connect and bind (that needs ABI 4, Linux 6.7)",
			    abi) != 0)
			return -1;
	} else if (ll->tcp) {
		attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
		attr_size = offsetof(struct ll_ruleset_attr, scoped);
		tcp = 1;
	}
	/* scoping is hardening on top, applied where the kernel has it */
	if (ll->scopes && abi >= 6) {
		if (ll->scopes & FG_LL_SCOPE_SIGNAL)
			attr.scoped |= LL_SCOPE_SIGNAL;
		if (ll->scopes & FG_LL_SCOPE_ABSTRACT_UNIX)
			attr.scoped |= LL_SCOPE_ABSTRACT_UNIX_SOCKET;
		attr_size = sizeof attr;
	}

	rfd = (int)syscall(__NR_landlock_create_ruleset, &attr, attr_size, 0);
	if (rfd < 0) {
		fg_seterr(err, errlen, "sandbox: landlock_create_ruleset (ABI %d): %s", abi, strerror(errno));
		goto out;
	}
	if (add_path_rules(ll, rfd, handled, &added, &absent, err, errlen) != 0)
		goto out;
	if (tcp && add_port_rules(ll, rfd, &nconnect, &nbind, err, errlen) != 0)
		goto out;
	if (syscall(__NR_landlock_restrict_self, rfd, 0) != 0) {
		fg_seterr(err, errlen, "sandbox: landlock_restrict_self: %s", strerror(errno));
		goto out;
	}
	desc_add(ll, "landlock ABI %d, %zu path%s", abi, added, added == 1 ? "" : "s");
	if (absent)
		desc_add(ll, " (%zu absent)", absent);
	if (tcp)
		desc_add(ll, ", tcp connect %zu port%s, bind %zu port%s", nconnect, nconnect == 1 ? "" : "s",
			 nbind, nbind == 1 ? "" : "s");
	else if (ll->tcp)
		desc_add(ll, ", tcp unrestricted (ABI %d < 4)", abi);
	if (attr.scoped)
		desc_add(ll, ", scoped %s%s%s", (attr.scoped & LL_SCOPE_SIGNAL) ? "signal" : "",
			 attr.scoped == (LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT_UNIX_SOCKET) ? "+" : "",
			 (attr.scoped & LL_SCOPE_ABSTRACT_UNIX_SOCKET) ? "abstract-unix" : "");
	if (nnp)
		desc_add(ll, "; no_new_privs");
	ll->applied = 1;
	rc = 0;
out:
	if (rfd >= 0)
		close(rfd);
	return rc;
}
