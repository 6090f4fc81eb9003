/*
 * confine.c: the daemon's sandbox (confine.h). The whole policy is here:
 * the fixed paths in one table, the paths from the configuration in
 * build_rules, the policy reader at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "acme_chal.h"
#include "confine.h"
#include "crl.h"
#include "fg_landlock.h"
#include "fg_log.h"
#include "fg_util.h"
#include "policy_fixtures.h"
#include "signer.h"

#define OPT FG_LL_OPTIONAL
#define MAX_CA_DIRS 16
#define MAX_OWNED 64

/* What the daemon reads at run time whatever its configuration. Nothing
 * here is writable but /dev/null, and nothing is executable. */
static const struct {
	const char *path;
	enum fg_ll_access access;
	unsigned flags;
} fixed_rules[] = {
	{ "/usr", FG_LL_READ, 0 },                      /* libraries loaded at run time (NSS, OpenSSL), zoneinfo */
	{ "/etc/ssl", FG_LL_READ, OPT },                /* OpenSSL configuration, trust stores */
	{ "/etc/ca-certificates", FG_LL_READ, OPT },
	{ "/etc/localtime", FG_LL_READ, OPT },
	{ "/etc/resolv.conf", FG_LL_READ, OPT },        /* the backends' host names */
	{ "/etc/hosts", FG_LL_READ, OPT },
	{ "/etc/nsswitch.conf", FG_LL_READ, OPT },
	{ "/etc/host.conf", FG_LL_READ, OPT },
	{ "/etc/gai.conf", FG_LL_READ, OPT },
	{ "/etc/services", FG_LL_READ, OPT },
	{ "/proc/self", FG_LL_READ, 0 },                /* the process's own status and maps (libc, sanitizers) */
	{ "/proc/sys/vm/overcommit_memory", FG_LL_READ, OPT },
	{ "/sys/devices/system/cpu", FG_LL_READ, OPT }, /* CPU count (libc, ZeroMQ) */
	{ "/dev/null", FG_LL_RW_FILE, OPT },
	{ "/dev/urandom", FG_LL_READ, OPT },
};

struct plan {
	struct fg_landlock *ll;
	enum fg_sandbox_mode mode;
	char cadirs[MAX_CA_DIRS][PATH_MAX];   /* real paths of the CA key directories */
	size_t ncadirs;
	char owned[MAX_OWNED][PATH_MAX];      /* what the daemon writes: given to user */
	size_t nowned;
};

static char described[1024] = "not confined";
static uid_t drop_uid;
static gid_t drop_gid;
static int drop_wanted;

const char *confine_describe(void)
{
	return described;
}

/* 1 when path (which need not exist) is, holds or lies inside a CA key
 * directory. */
static int touches_ca(const struct plan *p, const char *path)
{
	char real[PATH_MAX];
	if (realpath(path, real) == NULL)
		fg_strlcpy(real, path, sizeof real);
	size_t rl = strlen(real);
	for (size_t i = 0; i < p->ncadirs; i++) {
		const char *c = p->cadirs[i];
		size_t cl = strlen(c);
		if (strcmp(real, c) == 0 || (rl > cl && strncmp(real, c, cl) == 0 && real[cl] == '/') ||
		    (cl > rl && strncmp(c, real, rl) == 0 && (c[rl] == '/' || strcmp(real, "/") == 0)))
			return 1;
	}
	return 0;
}

/* Add a rule; one that would reach a CA key directory is refused (in
 * required mode an error, else a warning and the rule is left out). */
static int add(struct plan *p, const char *path, enum fg_ll_access acc, unsigned flags, const char *what,
	       char *err, size_t errlen)
{
	if (touches_ca(p, path)) {
		if (p->mode == FG_SANDBOX_REQUIRED) {
			fg_seterr(err, errlen, "sandbox: %s (%s) is or holds a CA key directory, which the daemon must not reach; move it out of the CA directory (or the CA directory out of it)",
				  what, path);
			return -1;
		}
		fg_warn("gateway", NULL, "sandbox: %s (%s) holds a CA key directory: left out of the daemon's rules", what,
			path);
		return 0;
	}
	if (fg_landlock_add_path(p->ll, path, acc, flags) != 0) {
		fg_seterr(err, errlen, "sandbox: %s: path too long or out of memory", path);
		return -1;
	}
	return 0;
}

static void own(struct plan *p, const char *path)
{
	if (p->nowned < MAX_OWNED)
		fg_strlcpy(p->owned[p->nowned++], path, sizeof p->owned[0]);
}

/* The TCP port of an "http(s)://host[:port]/..." URL, or 0. */
static int url_port(const char *v)
{
	int def;
	if (strncmp(v, "https://", 8) == 0)
		def = 443, v += 8;
	else if (strncmp(v, "http://", 7) == 0)
		def = 80, v += 7;
	else
		return 0;
	const char *end = v + strcspn(v, "/?#");
	const char *colon = NULL;
	if (*v == '[') {
		const char *rb = memchr(v, ']', (size_t)(end - v));
		if (rb != NULL && rb + 1 < end && rb[1] == ':')
			colon = rb + 1;
	} else {
		colon = memchr(v, ':', (size_t)(end - v));
	}
	if (colon == NULL)
		return def;
	int port = atoi(colon + 1);
	return port > 0 && port < 65536 ? port : 0;
}

/* The port of a ZeroMQ "tcp://host:port" endpoint, or 0. */
static int zmq_port(const char *ep)
{
	if (strncmp(ep, "tcp://", 6) != 0)
		return 0;
	const char *colon = strrchr(ep + 6, ':');
	int port = colon ? atoi(colon + 1) : 0;
	return port > 0 && port < 65536 ? port : 0;
}

static int add_bind(struct plan *p, const char *hostport)
{
	char host[256];
	int port = 0;
	if (hostport[0] != '\0' && config_http_split(hostport, host, sizeof host, &port) == 0 && port > 0)
		return fg_landlock_allow_bind(p->ll, (uint16_t)port);
	return 0;
}

/* Settings of the backends: URLs give connect ports, files are readable,
 * the dns_hook executable. */
static int add_backend(struct plan *p, const struct gw_config *cfg, const struct config_backend *cb, char *err,
		       size_t errlen)
{
	const char *sd = fg_kv_get(cb->settings, cb->nsettings, "state_dir");
	for (size_t i = 0; i < cb->nsettings; i++) {
		const char *k = cb->settings[i].key, *v = cb->settings[i].value;
		char path[PATH_MAX];
		struct stat sb;
		if (v == NULL || v[0] == '\0' || strcmp(k, "state_dir") == 0 || strcmp(k, "ca_dir") == 0)
			continue;
		int port = url_port(v);
		if (port > 0) {
			if (fg_landlock_allow_connect(p->ll, (uint16_t)port) != 0)
				goto oom;
			continue;
		}
		if (strchr(v, '/') == NULL && strchr(v, '.') == NULL)
			continue;
		if (v[0] == '/')
			fg_strlcpy(path, v, sizeof path);
		else if (fg_path_join(sd ? sd : cfg->state_dir, v, path, sizeof path) != 0)
			continue;
		if (stat(path, &sb) != 0)
			continue;
		if (strcmp(k, "dns_hook") == 0)
			continue;   /* run by the policy reader, outside (confine_run_hook) */
		if (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)) {
			char what[256];
			snprintf(what, sizeof what, "backend %s setting %s", cb->name, k);
			if (touches_ca(p, path))
				continue;   /* the local CA's own certificate: loaded before */
			if (add(p, path, FG_LL_READ, 0, what, err, errlen) != 0)
				return -1;
		}
	}
	return 0;
oom:
	fg_seterr(err, errlen, "out of memory");
	return -1;
}

static int build_rules(struct plan *p, const struct gw_config *cfg, char *err, size_t errlen)
{
	char path[PATH_MAX + 16];

	for (size_t i = 0; i < cfg->nbackends; i++) {
		char dir[PATH_MAX];
		if (!signer_holds_key(&cfg->backends[i]) || p->ncadirs == MAX_CA_DIRS)
			continue;
		if (signer_key_dir(cfg, &cfg->backends[i], dir, sizeof dir) != 0 ||
		    realpath(dir, p->cadirs[p->ncadirs]) == NULL)
			fg_strlcpy(p->cadirs[p->ncadirs], dir, sizeof p->cadirs[0]);
		p->ncadirs++;
	}
	for (size_t i = 0; i < sizeof fixed_rules / sizeof fixed_rules[0]; i++)
		if (add(p, fixed_rules[i].path, fixed_rules[i].access, fixed_rules[i].flags, "system path", err,
			errlen) != 0)
			return -1;
	/* A rule holds an inode, and resolvers replace their file (rename):
	 * where /etc/resolv.conf links elsewhere (systemd-resolved's
	 * /run/systemd/resolve, resolvconf's /run/resolvconf), the directory
	 * it lives in is granted, so a rewritten file is still read. One in
	 * /etc itself is read as it was when the daemon started. */
	char rp[PATH_MAX];
	if (realpath("/etc/resolv.conf", rp) != NULL) {
		char *slash = strrchr(rp, '/');
		if (slash != NULL && slash != rp) {
			*slash = '\0';
			if (strcmp(rp, "/etc") != 0 && add(p, rp, FG_LL_READ, OPT, "resolver", err, errlen) != 0)
				return -1;
		}
	}
	if (cfg->plugin_dir[0] != '\0' && add(p, cfg->plugin_dir, FG_LL_READ, OPT, "plugin_dir", err, errlen) != 0)
		return -1;

	/* The store: its file and the WAL files SQLite keeps beside it (the
	 * store keeps them, SQLITE_FCNTL_PERSIST_WAL, so that the rules on
	 * their inodes hold for the daemon's life). */
	static const char *const suffix[] = { "", "-wal", "-shm" };
	for (size_t i = 0; i < 3; i++) {
		struct stat sb;
		snprintf(path, sizeof path, "%s%s", cfg->store_path, suffix[i]);
		if (stat(path, &sb) != 0) {
			fg_seterr(err, errlen, "sandbox: the store file %s is missing (%s); the store must be opened before the sandbox applies",
				  path, strerror(errno));
			return -1;
		}
		if (add(p, path, FG_LL_RW_FILE, 0, "the store", err, errlen) != 0)
			return -1;
		own(p, path);
	}

	/* The CRLs the daemon publishes. */
	if (crl_path(cfg, "x", path, sizeof path) != 0) {
		fg_seterr(err, errlen, "sandbox: the state directory path is too long");
		return -1;
	}
	*strrchr(path, '/') = '\0';
	if (mkdir(path, 0755) != 0 && errno != EEXIST) {
		fg_seterr(err, errlen, "sandbox: cannot make %s: %s", path, strerror(errno));
		return -1;
	}
	if (add(p, path, FG_LL_RW_DIR, 0, "the CRL directory", err, errlen) != 0)
		return -1;
	own(p, path);

	/* The dashboard's token: its directory, since `fleetgate ui token`
	 * replaces the file (a new inode) while the daemon runs. */
	if (cfg->ui_enabled) {
		fg_strlcpy(path, cfg->ui_token_path, sizeof path);
		char *slash = strrchr(path, '/');
		if (slash == NULL || slash == path) {
			fg_seterr(err, errlen, "sandbox: ui.token (%s) must be a file in a directory of its own, such as the default ui/token",
				  cfg->ui_token_path);
			return -1;
		}
		*slash = '\0';
		if (fg_mkdirs(path, 0700, err, errlen) != 0)
			return -1;
		if (add(p, path, FG_LL_READ, 0, "the directory of ui.token", err, errlen) != 0)
			return -1;
	}

	/* The other directories of the state directory (the plugins' own, the
	 * EST front-end's), but no CA key directory and not keys/, of which
	 * the daemon reads one file. */
	DIR *d = opendir(cfg->state_dir);
	if (d == NULL) {
		fg_seterr(err, errlen, "sandbox: cannot list %s: %s", cfg->state_dir, strerror(errno));
		return -1;
	}
	struct dirent *de;
	int rc = 0;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		struct stat sb;
		if (de->d_name[0] == '.' || strcmp(de->d_name, "keys") == 0 || strcmp(de->d_name, "crl") == 0)
			continue;
		if (fg_path_join(cfg->state_dir, de->d_name, path, sizeof path) != 0)
			continue;
		if (lstat(path, &sb) != 0 || !S_ISDIR(sb.st_mode) || touches_ca(p, path))
			continue;
		rc = add(p, path, FG_LL_RW_DIR, 0, "a directory of the state directory", err, errlen);
		own(p, path);
	}
	closedir(d);
	if (rc != 0)
		return -1;

	if (add(p, cfg->curve_key_path, FG_LL_READ, 0, "curve_key", err, errlen) != 0)
		return -1;
	if (cfg->est_listen[0] != '\0' &&
	    (add(p, cfg->est_cert, FG_LL_READ, 0, "est.cert", err, errlen) != 0 ||
	     add(p, cfg->est_key, FG_LL_READ, 0, "est.key", err, errlen) != 0))
		return -1;
	for (size_t i = 0; i < cfg->nbackends; i++)
		if (add_backend(p, cfg, &cfg->backends[i], err, errlen) != 0)
			return -1;

	/* TCP: listen where the configuration says, connect to the backends'
	 * ports and DNS (which falls back to TCP for long answers). */
	fg_landlock_restrict_tcp(p->ll);
	int zp = zmq_port(cfg->listen);
	if ((zp > 0 && fg_landlock_allow_bind(p->ll, (uint16_t)zp) != 0) || add_bind(p, cfg->http_listen) != 0 ||
	    add_bind(p, cfg->est_listen) != 0 || fg_landlock_allow_connect(p->ll, 53) != 0) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	/* Signals too: the daemon signals nothing outside itself (it stops
	 * the signer's monitor by shutting their socket, and fg-policyread
	 * times out and kills hooks). */
	fg_landlock_scope(p->ll, FG_LL_SCOPE_ABSTRACT_UNIX | FG_LL_SCOPE_SIGNAL);
	return 0;
}

/* Give user the files the daemon writes (started as root, before the
 * switch): the store, the CRLs, the plugins' directories. */
static uid_t chown_uid;
static gid_t chown_gid;
static int chown_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	if (lchown(path, chown_uid, chown_gid) != 0) {
		fg_err("gateway", NULL, "cannot give %s to the daemon's user: %s", path, strerror(errno));
		return 1;
	}
	return 0;
}

/* Look up cfg->user: with root and a user set, drop_* say whom to become.
 * 0, or -1 with err. */
static int resolve_user(const struct gw_config *cfg, char *err, size_t errlen)
{
	drop_wanted = 0;
	if (cfg->user[0] == '\0')
		return 0;
	struct passwd *pw = getpwnam(cfg->user);
	if (pw == NULL) {
		fg_seterr(err, errlen, "user = \"%s\": no such user; create it (useradd --system --no-create-home %s) or change the setting",
			  cfg->user, cfg->user);
		return -1;
	}
	if (geteuid() != 0) {
		if (geteuid() != pw->pw_uid)
			fg_warn("gateway", NULL, "user = \"%s\" is not applied: fleetgated was started as uid %u, not as root",
				cfg->user, (unsigned)geteuid());
		return 0;
	}
	if (pw->pw_uid == 0) {
		fg_seterr(err, errlen, "user = \"%s\" is root; name an unprivileged user", cfg->user);
		return -1;
	}
	drop_uid = pw->pw_uid;
	drop_gid = pw->pw_gid;
	drop_wanted = 1;
	return 0;
}

static int prepare_user(const struct gw_config *cfg, struct plan *p, char *err, size_t errlen)
{
	if (resolve_user(cfg, err, errlen) != 0)
		return -1;
	if (!drop_wanted)
		return 0;
	chown_uid = drop_uid;
	chown_gid = drop_gid;
	for (size_t i = 0; i < p->nowned; i++)
		if (nftw(p->owned[i], chown_one, 16, FTW_PHYS) != 0) {
			fg_seterr(err, errlen, "cannot give %s to user %s (see the line above)", p->owned[i], cfg->user);
			return -1;
		}
	/* The state directory stays root's (it holds the CA directory); the
	 * user gets search on it through its group, nothing more, so that it
	 * reaches the store, the CRLs and the policy's fixtures by name. */
	struct stat sb;
	if (stat(cfg->state_dir, &sb) != 0) {
		fg_seterr(err, errlen, "cannot stat %s: %s", cfg->state_dir, strerror(errno));
		return -1;
	}
	if (sb.st_uid != drop_uid && !(sb.st_mode & S_IXOTH) && !(sb.st_gid == drop_gid && (sb.st_mode & S_IXGRP))) {
		if (sb.st_gid != 0 && sb.st_gid != drop_gid) {
			fg_seterr(err, errlen,
				  "user %s cannot enter %s (group %u, mode %o) and the gateway will not change a group it did not set; "
				  "give the user search on it (chmod o+x, or chgrp to the user's group and chmod g+x)",
				  cfg->user, cfg->state_dir, (unsigned)sb.st_gid, (unsigned)(sb.st_mode & 07777));
			return -1;
		}
		if (chown(cfg->state_dir, (uid_t)-1, drop_gid) != 0 ||
		    chmod(cfg->state_dir, (sb.st_mode & 07777 & ~(mode_t)(S_IRGRP | S_IWGRP)) | S_IXGRP) != 0) {
			fg_seterr(err, errlen, "cannot give user %s search on %s: %s", cfg->user, cfg->state_dir, strerror(errno));
			return -1;
		}
	}
	/* Every directory above what the user opens must let it through. */
	for (size_t i = 0; i < p->nowned; i++) {
		char dir[PATH_MAX];
		fg_strlcpy(dir, p->owned[i], sizeof dir);
		for (char *slash = strrchr(dir, '/'); slash != NULL && slash != dir; slash = strrchr(dir, '/')) {
			*slash = '\0';
			if (stat(dir, &sb) != 0)
				continue;
			if (sb.st_uid == drop_uid || (sb.st_mode & S_IXOTH) || (sb.st_gid == drop_gid && (sb.st_mode & S_IXGRP)))
				continue;
			fg_seterr(err, errlen,
				  "user %s cannot reach %s: %s is mode %o, uid %u, gid %u; give the user search on it (chmod o+x) or move the file",
				  cfg->user, p->owned[i], dir, (unsigned)(sb.st_mode & 07777), (unsigned)sb.st_uid,
				  (unsigned)sb.st_gid);
			return -1;
		}
	}
	return 0;
}

int confine_apply(const struct gw_config *cfg, char *err, size_t errlen)
{
	struct plan *p = calloc(1, sizeof *p);
	int rc = -1;

	if (p == NULL || (p->ll = fg_landlock_new()) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	switch (config_sandbox_mode(cfg)) {
	case SANDBOX_REQUIRED: p->mode = FG_SANDBOX_REQUIRED; break;
	case SANDBOX_BEST_EFFORT: p->mode = FG_SANDBOX_BEST_EFFORT; break;
	default: p->mode = FG_SANDBOX_OFF; break;
	}
	if (build_rules(p, cfg, err, errlen) != 0 || prepare_user(cfg, p, err, errlen) != 0)
		goto out;
	if (p->mode == FG_SANDBOX_OFF) {
		fg_strlcpy(described, "sandbox = \"off\": no Landlock", sizeof described);
		rc = 0;
		goto out;
	}
	if (fg_landlock_apply(p->ll, p->mode, err, errlen) != 0)
		goto out;
	snprintf(described, sizeof described, "%s", fg_landlock_describe(p->ll));
	rc = 0;
out:
	if (p != NULL)
		fg_landlock_free(p->ll);
	free(p);
	return rc;
}

int confine_drop_user(const struct gw_config *cfg, char *err, size_t errlen)
{
	if (!drop_wanted)
		return 0;
	uid_t r, e, s;
	gid_t rg, eg, sg;
	if (setgroups(1, &drop_gid) != 0 || setresgid(drop_gid, drop_gid, drop_gid) != 0 ||
	    setresuid(drop_uid, drop_uid, drop_uid) != 0) {
		fg_seterr(err, errlen, "cannot switch to user %s: %s", cfg->user, strerror(errno));
		return -1;
	}
	/* Check what the kernel now says, and that the way back is shut. */
	if (getresuid(&r, &e, &s) != 0 || r != drop_uid || e != drop_uid || s != drop_uid ||
	    getresgid(&rg, &eg, &sg) != 0 || rg != drop_gid || eg != drop_gid || sg != drop_gid ||
	    setuid(0) == 0 || getgroups(0, NULL) != 1) {
		fg_seterr(err, errlen, "switching to user %s did not take: the daemon stops", cfg->user);
		return -1;
	}
	size_t n = strlen(described);
	snprintf(described + n, sizeof described - n, "; user %s (uid %u)", cfg->user, (unsigned)drop_uid);
	fg_info("gateway", NULL, "now running as user %s (uid %u, gid %u)", cfg->user, (unsigned)drop_uid,
		(unsigned)drop_gid);
	return 0;
}

/* ---- the policy reader (and hook runner) ----
 *
 * Requests, one SOCK_SEQPACKET message each:
 *   OP_POLICY, OP_FIXTURES   answered with int32 errno (0) and, when 0, the
 *                            open descriptor (SCM_RIGHTS);
 *   OP_HOOK                  int32 timeout, then NUL-terminated path, action
 *                            and env strings, with the descriptor of a reply
 *                            socket (SCM_RIGHTS); a child of the reader runs
 *                            the hook and writes int32 result, err and
 *                            output (NUL-terminated) to that socket;
 *   OP_PEER                  uint32 uid, uint32 gid: answered with int32
 *                            membership (1 when uid is in group gid, 0 when
 *                            not, -1 when uid has no name) and the name,
 *                            NUL-terminated. The confined daemon cannot
 *                            read /etc/passwd and /etc/group itself: a
 *                            Landlock rule holds a file's inode, and
 *                            useradd and usermod replace those files.
 */

enum { OP_POLICY = 0, OP_FIXTURES = 1, OP_HOOK = 2, OP_PEER = 3 };
#define HOOK_MSG_MAX 16384
#define HOOK_OUT_MAX 2048
#define HOOK_TIMEOUT_MAX 3600
#define HOOKS_MAX 16

static int broker_sock = -1;
static pid_t broker_pid;
static pthread_mutex_t broker_lock = PTHREAD_MUTEX_INITIALIZER;
static char broker_paths[2][PATH_MAX];
static char hook_paths[HOOKS_MAX][PATH_MAX];   /* real paths of the configured hooks */
static size_t nhooks;

static int send_with_fd(int sock, const void *buf, size_t len, int fd)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		m.msg_control = u.buf;
		m.msg_controllen = sizeof u.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	ssize_t r;
	do
		r = sendmsg(sock, &m, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r == (ssize_t)len ? 0 : -1;
}

/* Receive one message into buf; *fd gets a passed descriptor or -1.
 * Returns its length, 0 at EOF, -1 on an error. */
static ssize_t recv_with_fd(int sock, void *buf, size_t len, int *fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
	ssize_t r;
	*fd = -1;
	do
		r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (c != NULL && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
	    c->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(fd, CMSG_DATA(c), sizeof *fd);
	if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		errno = EMSGSIZE;
		return -1;
	}
	return r;
}

/* Remove the admin socket at path if nobody answers on it (the daemon
 * that made it is gone, and no other took it over). */
static void remove_stale_admin_socket(const char *path)
{
	struct sockaddr_un su = { .sun_family = AF_UNIX };
	struct stat sb;
	if (path == NULL || lstat(path, &sb) != 0 || !S_ISSOCK(sb.st_mode) ||
	    fg_strlcpy(su.sun_path, path, sizeof su.sun_path) >= sizeof su.sun_path)
		return;
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s >= 0 && connect(s, (struct sockaddr *)&su, sizeof su) != 0 && errno == ECONNREFUSED)
		unlink(path);
	if (s >= 0)
		close(s);
}

static int env_ok(const char *e)
{
	const char *eq = strchr(e, '=');
	if (strncmp(e, "FLEETGATE_", 10) != 0 || eq == NULL)
		return 0;
	for (const char *c = e + 10; c < eq; c++)
		if (!((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_'))
			return 0;
	return 1;
}

static int action_ok(const char *a)
{
	size_t n = strlen(a);
	if (n == 0 || n > 32)
		return 0;
	for (; *a; a++)
		if (!((*a >= 'a' && *a <= 'z') || *a == '-'))
			return 0;
	return 1;
}

/* A child of the reader: check the request, run the hook, answer on rfd. */
static void hook_child(const char *msg, size_t len, int rfd, uid_t uid, gid_t gid, int drop)
{
	char err[PATH_MAX + 256] = "", out[HOOK_OUT_MAX] = "", real[PATH_MAX];
	const char *env[64];
	size_t ne = 0;
	int32_t rc = -1, timeout;

	signal(SIGCHLD, SIG_DFL);
	memcpy(&timeout, msg, sizeof timeout);
	const char *p = msg + sizeof timeout, *end = msg + len;
	const char *path = p;
	const char *nul = memchr(p, '\0', (size_t)(end - p));
	const char *action = nul ? nul + 1 : NULL;
	nul = action && action < end ? memchr(action, '\0', (size_t)(end - action)) : NULL;
	if (nul == NULL) {
		snprintf(err, sizeof err, "malformed hook request");
		goto reply;
	}
	for (p = nul + 1; p < end && ne < 63;) {
		const char *n2 = memchr(p, '\0', (size_t)(end - p));
		if (n2 == NULL)
			break;
		if (!env_ok(p)) {
			snprintf(err, sizeof err, "hook environment '%.64s' refused: only FLEETGATE_NAME=value strings pass", p);
			goto reply;
		}
		env[ne++] = p;
		p = n2 + 1;
	}
	env[ne] = NULL;
	size_t i;
	for (i = 0; realpath(path, real) != NULL && i < nhooks; i++)
		if (strcmp(real, hook_paths[i]) == 0)
			break;
	if (i == nhooks || nhooks == 0) {
		snprintf(err, sizeof err, "%.1024s is not a hook the configuration names (dns_hook); the gateway runs no other program",
			 path);
		goto reply;
	}
	if (!action_ok(action)) {
		snprintf(err, sizeof err, "hook action '%.40s' refused", action);
		goto reply;
	}
	if (timeout <= 0 || timeout > HOOK_TIMEOUT_MAX)
		timeout = HOOK_TIMEOUT_MAX;
	if (drop && (setgroups(1, &gid) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)) {
		snprintf(err, sizeof err, "cannot switch to the daemon's user to run %.1024s: %s", path, strerror(errno));
		goto reply;
	}
	rc = acme_hook_run(real, action, env, timeout, out, sizeof out, err, sizeof err) == 0 ? 0 : -1;
reply:;
	size_t el = strlen(err) + 1, ol = strlen(out) + 1;
	char *buf = malloc(sizeof rc + el + ol);
	if (buf != NULL) {
		memcpy(buf, &rc, sizeof rc);
		memcpy(buf + sizeof rc, err, el);
		memcpy(buf + sizeof rc + el, out, ol);
		size_t n = sizeof rc + el + ol, off = 0;
		while (off < n) {
			ssize_t w = write(rfd, buf + off, n - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			off += (size_t)w;
		}
	}
	_exit(0);
}

/* Look up uid's name and whether it is in group gid, from the system's
 * databases. Returns the name's length (name is "" and *member -1 when
 * uid has none). */
static size_t confine_peer_local(uid_t uid, gid_t gid, char *name, size_t namelen, int32_t *member)
{
	struct passwd *pw = getpwuid(uid);
	name[0] = '\0';
	*member = -1;
	if (pw == NULL)
		return 0;
	fg_strlcpy(name, pw->pw_name, namelen);
	*member = 0;
	if (gid == (gid_t)-1)
		return strlen(name);
	gid_t groups[256];
	int ng = sizeof groups / sizeof groups[0];
	if (pw->pw_gid == gid)
		*member = 1;
	else if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &ng) >= 0)
		for (int i = 0; i < ng; i++)
			if (groups[i] == gid)
				*member = 1;
	return strlen(name);
}

int confine_lookup_peer(uid_t uid, gid_t gid, char *name, size_t namelen, int *member)
{
	int32_t m = -1;
	if (broker_sock < 0) {
		confine_peer_local(uid, gid, name, namelen, &m);
		*member = m;
		return 0;
	}
	unsigned char req[1 + 2 * sizeof(uint32_t)];
	uint32_t ug[2] = { (uint32_t)uid, (uint32_t)gid };
	char rep[sizeof(int32_t) + 256 + 1];
	int fd = -1;
	ssize_t r = -1;
	req[0] = OP_PEER;
	memcpy(req + 1, ug, sizeof ug);
	pthread_mutex_lock(&broker_lock);
	if (send_with_fd(broker_sock, req, sizeof req, -1) == 0)
		r = recv_with_fd(broker_sock, rep, sizeof rep - 1, &fd);
	pthread_mutex_unlock(&broker_lock);
	if (fd >= 0)
		close(fd);
	if (r < (ssize_t)sizeof m + 1)
		return -1;
	rep[r] = '\0';
	memcpy(&m, rep, sizeof m);
	fg_strlcpy(name, rep + sizeof m, namelen);
	*member = m;
	return 0;
}

static void broker_main(int sock, const char *admin_sock)
{
	static char msg[HOOK_MSG_MAX];
	if (dup2(sock, 3) != 3)
		_exit(1);
	if (close_range(4, ~0u, 0) != 0)
		for (int fd = 4; fd < 1024; fd++)
			close(fd);
	signal(SIGCHLD, SIG_IGN);   /* hook children reap themselves */
	for (;;) {
		int rfd = -1;
		ssize_t r = recv_with_fd(3, msg, sizeof msg, &rfd);
		if (r == 0) {
			remove_stale_admin_socket(admin_sock);
			_exit(0);
		}
		if (r < 0) {
			if (errno == EMSGSIZE)
				continue;
			_exit(1);
		}
		unsigned char op = (unsigned char)msg[0];
		if (op == OP_HOOK) {
			if (rfd < 0 || r < 1 + (ssize_t)sizeof(int32_t)) {
				if (rfd >= 0)
					close(rfd);
				continue;
			}
			pid_t pid = fork();
			if (pid == 0) {
				close(3);
				hook_child(msg + 1, (size_t)r - 1, rfd, drop_uid, drop_gid, drop_wanted);
			}
			close(rfd);
			continue;
		}
		if (rfd >= 0)
			close(rfd);
		if (op == OP_PEER) {
			uint32_t ug[2] = { 0, 0 };
			char rep[sizeof(int32_t) + 256];
			int32_t member = -1;
			if (r == 1 + (ssize_t)sizeof ug)
				memcpy(ug, msg + 1, sizeof ug);
			size_t nl = confine_peer_local((uid_t)ug[0], (gid_t)ug[1], rep + sizeof member, 256, &member);
			memcpy(rep, &member, sizeof member);
			if (send_with_fd(3, rep, sizeof member + nl + 1, -1) != 0)
				_exit(1);
			continue;
		}
		int32_t e = 0;
		int fd = -1;
		struct stat sb;
		if (op > OP_FIXTURES)
			e = EINVAL;
		else if ((fd = open(broker_paths[op], O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0)
			e = errno;
		else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
			e = EINVAL;
		if (e != 0 && fd >= 0) {
			close(fd);
			fd = -1;
		}
		if (send_with_fd(3, &e, sizeof e, fd) != 0)
			_exit(1);
		if (fd >= 0)
			close(fd);
	}
}

static int broker_open(const char *path)
{
	unsigned char op;
	if (strcmp(path, broker_paths[0]) == 0)
		op = OP_POLICY;
	else if (strcmp(path, broker_paths[1]) == 0)
		op = OP_FIXTURES;
	else
		return -2;
	int32_t e = EIO;
	int fd = -1;
	ssize_t r = -1;
	pthread_mutex_lock(&broker_lock);
	if (broker_sock >= 0 && send_with_fd(broker_sock, &op, 1, -1) == 0)
		r = recv_with_fd(broker_sock, &e, sizeof e, &fd);
	pthread_mutex_unlock(&broker_lock);
	if (r != (ssize_t)sizeof e) {
		if (fd >= 0)
			close(fd);
		fg_err("policy", NULL, "the policy reader (pid %d) did not answer; the policy cannot be read again until fleetgated restarts",
		       (int)broker_pid);
		errno = EIO;
		return -1;
	}
	if (e != 0 || fd < 0) {
		if (fd >= 0)
			close(fd);
		errno = e ? e : EIO;
		return -1;
	}
	/* Blocking reads from here on (it was opened O_NONBLOCK against FIFOs). */
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
}

int confine_hook_runner(void)
{
	return broker_sock >= 0;
}

int confine_run_hook(const char *path, const char *action, const char *const *env_add, int timeout_s, char *output,
		     size_t outlen, char *err, size_t errlen)
{
	char *msg = malloc(HOOK_MSG_MAX);
	int sv[2] = { -1, -1 }, rc = -1;
	size_t n = 0;

	if (output != NULL && outlen > 0)
		output[0] = '\0';
	if (msg == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	int32_t t = timeout_s;
	msg[n++] = OP_HOOK;
	memcpy(msg + n, &t, sizeof t);
	n += sizeof t;
	const char *parts[2] = { path, action };
	for (size_t i = 0; i < 2 + 64; i++) {
		const char *s = i < 2 ? parts[i] : env_add ? env_add[i - 2] : NULL;
		if (s == NULL)
			break;
		size_t l = strlen(s) + 1;
		if (n + l > HOOK_MSG_MAX) {
			fg_seterr(err, errlen, "the hook request for %s is too long", path);
			goto out;
		}
		memcpy(msg + n, s, l);
		n += l;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		fg_seterr(err, errlen, "cannot run %s: socketpair: %s", path, strerror(errno));
		goto out;
	}
	pthread_mutex_lock(&broker_lock);
	int sent = broker_sock >= 0 && send_with_fd(broker_sock, msg, n, sv[1]) == 0;
	pthread_mutex_unlock(&broker_lock);
	close(sv[1]);
	sv[1] = -1;
	if (!sent) {
		fg_seterr(err, errlen, "cannot run %s: the hook runner (pid %d) is gone; restart fleetgated", path,
			  (int)broker_pid);
		goto out;
	}
	/* The answer: int32, err, output; EOF ends it. The runner kills the
	 * hook at timeout_s; the margin covers its start and its answer. */
	size_t used = 0;
	int64_t deadline = (int64_t)fg_mono_ns() / 1000000 + (int64_t)(timeout_s > 0 ? timeout_s : HOOK_TIMEOUT_MAX) * 1000 + 10000;
	for (;;) {
		int64_t left = deadline - (int64_t)fg_mono_ns() / 1000000;
		struct pollfd pfd = { .fd = sv[0], .events = POLLIN };
		int pr = left > 0 ? poll(&pfd, 1, (int)(left > 1000 ? 1000 : left)) : 0;
		if (pr < 0 && errno == EINTR)
			continue;
		if (left <= 0) {
			fg_seterr(err, errlen, "%s %s: the hook runner did not answer in time", path, action);
			goto out;
		}
		if (pr == 0)
			continue;
		ssize_t r = read(sv[0], msg + used, HOOK_MSG_MAX - 1 - used);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		used += (size_t)r;
		if (used >= HOOK_MSG_MAX - 1)
			break;
	}
	msg[used] = '\0';
	int32_t res;
	const char *e = msg + sizeof res, *o = e < msg + used ? e + strlen(e) + 1 : NULL;
	if (used < sizeof res + 2 || o == NULL || o >= msg + used + 1) {
		fg_seterr(err, errlen, "%s %s: the hook runner gave no answer (see the log)", path, action);
		goto out;
	}
	memcpy(&res, msg, sizeof res);
	if (output != NULL && outlen > 0)
		fg_strlcpy(output, o, outlen);
	if (res != 0)
		fg_seterr(err, errlen, "%s", e);
	rc = res == 0 ? 0 : -1;
out:
	if (sv[0] >= 0)
		close(sv[0]);
	free(msg);
	return rc;
}

/* The real paths of the hooks the configuration names (dns_hook). */
static void collect_hooks(const struct gw_config *cfg)
{
	nhooks = 0;
	for (size_t b = 0; b < cfg->nbackends; b++) {
		const struct config_backend *cb = &cfg->backends[b];
		const char *v = fg_kv_get(cb->settings, cb->nsettings, "dns_hook");
		const char *sd = fg_kv_get(cb->settings, cb->nsettings, "state_dir");
		char path[PATH_MAX];
		if (v == NULL || v[0] == '\0' || nhooks == HOOKS_MAX)
			continue;
		if (v[0] == '/')
			fg_strlcpy(path, v, sizeof path);
		else if (fg_path_join(sd ? sd : cfg->state_dir, v, path, sizeof path) != 0)
			continue;
		if (realpath(path, hook_paths[nhooks]) != NULL)
			nhooks++;
	}
}

int confine_broker_start(const struct gw_config *cfg, const char *admin_sock, char *err, size_t errlen)
{
	int sv[2];
	if (config_sandbox_mode(cfg) == SANDBOX_OFF)
		return 0;
	fg_strlcpy(broker_paths[0], cfg->policy_path, sizeof broker_paths[0]);
	if (policy_fixtures_path(cfg->policy_path, broker_paths[1], sizeof broker_paths[1]) != 0) {
		fg_seterr(err, errlen, "the policy path is too long");
		return -1;
	}
	collect_hooks(cfg);
	if (resolve_user(cfg, err, errlen) != 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		fg_seterr(err, errlen, "cannot make the policy reader's socket: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	broker_pid = fork();
	if (broker_pid < 0) {
		fg_seterr(err, errlen, "cannot fork the policy reader: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (broker_pid == 0) {
		/* It ends when the daemon's end of the socket closes (the daemon
		 * stopped or died), and then removes the admin socket, which
		 * the confined daemon cannot. */
		prctl(PR_SET_NAME, "fg-policyread", 0, 0, 0);
		close(sv[0]);
		broker_main(sv[1], admin_sock);
		_exit(1);
	}
	close(sv[1]);
	broker_sock = sv[0];
	fg_set_read_opener(broker_open);
	return 0;
}

void confine_broker_stop(void)
{
	fg_set_read_opener(NULL);
	if (broker_sock >= 0) {
		close(broker_sock);
		broker_sock = -1;
	}
	if (broker_pid > 0) {
		while (waitpid(broker_pid, NULL, 0) < 0 && errno == EINTR)
			;
		broker_pid = 0;
	}
}
