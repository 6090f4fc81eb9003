/*
 * fg_landlock: a process confines itself with the Linux kernel's Landlock
 * LSM and no_new_privs.
 *
 * A ruleset is built as a list of paths, each with an access class, plus
 * optional TCP port rules, then applied once. Everything not listed is
 * refused by the kernel (EACCES) from then on, for the calling process and
 * every thread and child it makes afterwards. The ABI the kernel offers is
 * probed at apply time and the access rights asked for are masked to what
 * it knows (Landlock ABI 1 is Linux 5.13; TCP rules need ABI 4, Linux 6.7;
 * signal and abstract-socket scoping need ABI 6, Linux 6.12).
 *
 * How a missing facility is handled is the caller's choice (enum
 * fg_sandbox_mode): "required" fails with a message naming what is missing
 * and how to choose best-effort; "best-effort" logs a warning and applies
 * what the kernel can; "off" applies nothing. Every system call is checked:
 * a sandbox never silently fails to apply.
 *
 * Landlock restricts the calling thread only (and what it creates later),
 * so fg_landlock_apply must run before the process starts any thread; it
 * refuses when other threads already run.
 *
 * Usage:
 *   struct fg_landlock *ll = fg_landlock_new();
 *   fg_landlock_add_path(ll, "/var/lib/x", FG_LL_RW_DIR, 0);
 *   fg_landlock_add_path(ll, "/etc/x.conf", FG_LL_READ, 0);
 *   fg_landlock_restrict_tcp(ll);
 *   fg_landlock_allow_connect(ll, 4433);
 *   if (fg_landlock_apply(ll, FG_SANDBOX_REQUIRED, err, sizeof err) != 0) ... exit
 *   fg_info("x", NULL, "sandbox: %s", fg_landlock_describe(ll));
 *   fg_landlock_free(ll);
 */
#ifndef FG_LANDLOCK_H
#define FG_LANDLOCK_H

#include <stddef.h>
#include <stdint.h>

enum fg_sandbox_mode {
	FG_SANDBOX_REQUIRED,     /* refuse to run without every facility asked for */
	FG_SANDBOX_BEST_EFFORT,  /* apply what the kernel offers, warn about the rest */
	FG_SANDBOX_OFF,          /* apply nothing */
	FG_SANDBOX_MODE_MAX
};

/* "required", "best-effort" (or "best_effort"), "off" (quotes around the
 * word are allowed); -1 for anything else. */
int fg_sandbox_mode_parse(const char *s);
/* The setting's spelling of m ("required", ...). */
const char *fg_sandbox_mode_name(enum fg_sandbox_mode m);

/* Access classes; each maps to a set of Landlock rights (landlock.c). */
enum fg_ll_access {
	FG_LL_READ,          /* read a file, or read and list a directory hierarchy */
	FG_LL_RW_FILE,       /* read and write (truncate) one existing file */
	FG_LL_RW_DIR,        /* a directory hierarchy: read, write, create, remove,
	                      * rename (what an atomic temp-file-and-rename needs) */
	FG_LL_EXEC,          /* read and execute (a file or a hierarchy) */
	FG_LL_ACCESS_MAX
};

/* fg_landlock_add_path flags */
#define FG_LL_OPTIONAL 0x1u  /* a path that does not exist is skipped (e.g. efivars) */

/* Scopes (Landlock ABI 6): the confined process may not reach outside its
 * domain through these. */
#define FG_LL_SCOPE_SIGNAL          0x1u  /* send signals */
#define FG_LL_SCOPE_ABSTRACT_UNIX   0x2u  /* connect to abstract Unix sockets */

struct fg_landlock;

/* A new, empty ruleset (nothing applied yet), or NULL when out of memory. */
struct fg_landlock *fg_landlock_new(void);
/* Free the builder; fg_landlock_free(NULL) is a no-op. What was applied
 * stays applied: the kernel keeps it for the life of the process. */
void fg_landlock_free(struct fg_landlock *ll);

/* Allow path with the access class acc. The path is opened (O_PATH) only at
 * apply time; symbolic links are followed then. A path listed twice gets
 * the union. 0, or -1 when out of memory or the path is too long. */
int fg_landlock_add_path(struct fg_landlock *ll, const char *path, enum fg_ll_access acc,
			 unsigned flags);

/* Make the ruleset govern TCP: once applied, connect(2) and bind(2) on TCP
 * sockets are refused but for the ports allowed below (ABI 4). Without this
 * call TCP is not restricted. */
void fg_landlock_restrict_tcp(struct fg_landlock *ll);
/* Allow TCP connect to / bind on port (any address); implies
 * fg_landlock_restrict_tcp. 0, or -1 when out of memory. */
int fg_landlock_allow_connect(struct fg_landlock *ll, uint16_t port);
int fg_landlock_allow_bind(struct fg_landlock *ll, uint16_t port);

/* Ask for FG_LL_SCOPE_* scoping. Hardening on top: applied where the
 * kernel has ABI 6, and never a reason to fail, even in required mode. */
void fg_landlock_scope(struct fg_landlock *ll, unsigned scopes);

/*
 * Apply: no_new_privs, then the ruleset, to the calling process. With
 * FG_SANDBOX_OFF nothing is applied. 0 when what the mode demands applies
 * (in best-effort mode, a missing facility is logged as a warning and the
 * rest applies); -1 with err naming the facility that failed and what to do.
 * After -1 in required mode the process may be partly confined (e.g.
 * no_new_privs set): the caller must not go on. Call once per ruleset.
 */
int fg_landlock_apply(struct fg_landlock *ll, enum fg_sandbox_mode mode, char *err, size_t errlen);

/* One line saying what applied, for the log, e.g.
 * "landlock ABI 7, 12 paths (2 absent), tcp connect 1 port, bind 0 ports,
 * scoped signal+abstract-unix; no_new_privs". Borrowed: valid until
 * fg_landlock_free. Before apply it is "not applied". */
const char *fg_landlock_describe(const struct fg_landlock *ll);

/* The Landlock ABI version the running kernel offers: >= 1, or 0 when the
 * kernel has no Landlock (not built in, or not enabled at boot) with errno
 * set by the probe (ENOSYS, EOPNOTSUPP). */
int fg_landlock_abi(void);

#endif
