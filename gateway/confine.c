/*
 * confine.c: the daemon's sandbox (confine.h). The whole policy is here:
 * the fixed paths in one table, the paths from the configuration in
 * build_rules, the policy reader at the end.
 */
#include <dirent.h>
#include <elf.h>
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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
	{ "/etc/passwd", FG_LL_READ, OPT },             /* the user to switch to, peers of the admin socket */
	{ "/etc/group", FG_LL_READ, OPT },
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

/* The ELF interpreter (PT_INTERP) of the executable at path into out; 0,
 * or -1 when it has none (static, or not ELF). */
static int elf_interp(const char *path, char *out, size_t outlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = -1;
	Elf64_Ehdr eh;
	if (fd < 0)
		return -1;
	if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr))
		goto out;
	for (unsigned i = 0; i < eh.e_phnum && i < 64; i++) {
		Elf64_Phdr ph;
		if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + i * sizeof ph)) != (ssize_t)sizeof ph)
			goto out;
		if (ph.p_type == PT_INTERP && ph.p_filesz > 1 && ph.p_filesz < outlen) {
			if (pread(fd, out, ph.p_filesz, (off_t)ph.p_offset) != (ssize_t)ph.p_filesz)
				goto out;
			out[ph.p_filesz - 1] = '\0';
			rc = 0;
			goto out;
		}
	}
out:
	close(fd);
	return rc;
}

/* A hook program a backend runs (the ACME dns_hook): it, its "#!"
 * interpreter and their ELF interpreter may be executed, nothing else. */
static int add_hook(struct plan *p, const char *hook, char *err, size_t errlen)
{
	char prog[PATH_MAX], interp[PATH_MAX];
	if (realpath(hook, prog) == NULL)
		return 0;   /* the plugin says at its start that the hook is missing */
	if (add(p, prog, FG_LL_EXEC, 0, "dns_hook", err, errlen) != 0)
		return -1;
	FILE *f = fopen(prog, "re");
	char line[PATH_MAX + 4] = "";
	if (f != NULL) {
		if (fgets(line, sizeof line, f) == NULL)
			line[0] = '\0';
		fclose(f);
	}
	if (strncmp(line, "#!", 2) == 0) {
		char *s = line + 2;
		s += strspn(s, " \t");
		s[strcspn(s, " \t\r\n")] = '\0';
		if (s[0] == '/' && realpath(s, prog) != NULL &&
		    add(p, prog, FG_LL_EXEC, 0, "the dns_hook's interpreter", err, errlen) != 0)
			return -1;
	}
	if (elf_interp(prog, interp, sizeof interp) == 0 && realpath(interp, prog) != NULL &&
	    add(p, prog, FG_LL_EXEC, 0, "the ELF interpreter of the dns_hook", err, errlen) != 0)
		return -1;
	return 0;
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
		if (strcmp(k, "dns_hook") == 0) {
			if (add_hook(p, path, err, errlen) != 0)
				return -1;
		} else if (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)) {
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
	fg_landlock_scope(p->ll, FG_LL_SCOPE_ABSTRACT_UNIX);
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

static int prepare_user(const struct gw_config *cfg, struct plan *p, char *err, size_t errlen)
{
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
	chown_uid = drop_uid;
	chown_gid = drop_gid;
	for (size_t i = 0; i < p->nowned; i++)
		if (nftw(p->owned[i], chown_one, 16, FTW_PHYS) != 0) {
			fg_seterr(err, errlen, "cannot give %s to user %s (see the line above)", p->owned[i], cfg->user);
			return -1;
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

/* ---- the policy reader ---- */

static int broker_sock = -1;
static pid_t broker_pid;
static pthread_mutex_t broker_lock = PTHREAD_MUTEX_INITIALIZER;
static char broker_paths[2][PATH_MAX];

/* Remove the admin socket at path if it is still the one of inode ino. */
static void remove_admin_socket(const char *path, dev_t dev, ino_t ino)
{
	struct stat sb;
	if (path != NULL && lstat(path, &sb) == 0 && S_ISSOCK(sb.st_mode) && sb.st_dev == dev && sb.st_ino == ino)
		unlink(path);
}

static void broker_main(int sock, const char *admin_sock)
{
	struct stat asb = { 0 };
	if (admin_sock != NULL && lstat(admin_sock, &asb) != 0)
		admin_sock = NULL;
	if (dup2(sock, 3) != 3)
		_exit(1);
	if (close_range(4, ~0u, 0) != 0)
		for (int fd = 4; fd < 1024; fd++)
			close(fd);
	for (;;) {
		unsigned char idx;
		ssize_t r = recv(3, &idx, 1, 0);
		if (r == 0) {
			remove_admin_socket(admin_sock, asb.st_dev, asb.st_ino);
			_exit(0);
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		int32_t e = 0;
		int fd = -1;
		struct stat sb;
		if (idx > 1)
			e = EINVAL;
		else if ((fd = open(broker_paths[idx], O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0)
			e = errno;
		else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
			e = EINVAL;
		struct iovec iov = { .iov_base = &e, .iov_len = sizeof e };
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} u;
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (e == 0) {
			m.msg_control = u.buf;
			m.msg_controllen = sizeof u.buf;
			struct cmsghdr *c = CMSG_FIRSTHDR(&m);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &fd, sizeof fd);
		}
		if (sendmsg(3, &m, MSG_NOSIGNAL) < 0)
			_exit(1);
		if (fd >= 0)
			close(fd);
	}
}

static int broker_open(const char *path)
{
	unsigned char idx;
	if (strcmp(path, broker_paths[0]) == 0)
		idx = 0;
	else if (strcmp(path, broker_paths[1]) == 0)
		idx = 1;
	else
		return -2;
	int32_t e = EIO;
	int fd = -1;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = &e, .iov_len = sizeof e };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
	pthread_mutex_lock(&broker_lock);
	ssize_t r = -1;
	if (broker_sock >= 0 && send(broker_sock, &idx, 1, MSG_NOSIGNAL) == 1) {
		do
			r = recvmsg(broker_sock, &m, MSG_CMSG_CLOEXEC);
		while (r < 0 && errno == EINTR);
	}
	pthread_mutex_unlock(&broker_lock);
	if (r != (ssize_t)sizeof e) {
		fg_err("policy", NULL, "the policy reader (pid %d) did not answer; the policy cannot be read again until fleetgated restarts",
		       (int)broker_pid);
		errno = EIO;
		return -1;
	}
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (e == 0 && c != NULL && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
	    c->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(&fd, CMSG_DATA(c), sizeof fd);
	if (fd < 0) {
		errno = e ? e : EIO;
		return -1;
	}
	/* Blocking reads from here on (it was opened O_NONBLOCK against FIFOs). */
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
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
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		fg_seterr(err, errlen, "cannot make the policy reader's socket: %s", strerror(errno));
		return -1;
	}
	pid_t parent = getpid();
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
		(void)parent;
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
