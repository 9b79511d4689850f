#!/usr/bin/env bash
# Builds the base image of the docker sandbox backend locally (there is no registry): a minimal Debian
# bookworm made by debootstrap, with gcc + libc6-dev for linking and util-linux, plus the small
# `sandbox-exec` helper compiled inside it. Rust is not in the image: the backend mounts the host's
# toolchain read-only at /opt/rust, so both backends run the same rustc.
#
#   build-sandbox-image.sh [IMAGE]      (default nightshift/sandbox-base:bookworm)
#
# A no-op when the image already exists with the current IMAGE_VERSION; exits 0 with a one-line message
# when no Docker engine answers (the docker tests then skip). DEBIAN_MIRROR overrides the mirror.
set -euo pipefail

IMAGE="${1:-nightshift/sandbox-base:bookworm}"
# Bump when the image contents change; must match IMAGE_VERSION in nightshift_sandbox/backends/docker.py.
IMAGE_VERSION=4
LABEL=nightshift.sandbox-image
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { echo "build-sandbox-image: $*"; }

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  say "no Docker engine answers; not building $IMAGE (the docker backend tests will skip)"
  exit 0
fi

current="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$IMAGE" 2>/dev/null || true)"
previous_id="$(docker image inspect --format '{{ .Id }}' "$IMAGE" 2>/dev/null || true)"
if [ "$current" = "$IMAGE_VERSION" ]; then
  say "$IMAGE is up to date"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  say "debootstrap needs root: run 'sudo make sandbox-image' to build $IMAGE (docker tests skip until then)"
  exit 0
fi
DEBOOTSTRAP="$(command -v debootstrap || echo /usr/sbin/debootstrap)"
if [ ! -x "$DEBOOTSTRAP" ]; then
  say "debootstrap is missing (make system-deps installs it)" >&2
  exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/nightshift-sandbox-image.XXXXXX")"
ROOTFS="$WORK/rootfs"
cleanup() {
  # debootstrap mounts /proc and /sys in the target; never let rm walk into them.
  if [ -d "$ROOTFS" ]; then
    awk -v root="$ROOTFS" 'index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r |
      while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
  fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

if [ -n "$current" ]; then
  say "$IMAGE has image version '$current', rebuilding as version $IMAGE_VERSION"
fi
say "debootstrap bookworm (minbase + gcc, libc6-dev, util-linux) from $MIRROR into $ROOTFS"
"$DEBOOTSTRAP" --variant=minbase --include=gcc,libc6-dev,util-linux bookworm "$ROOTFS" "$MIRROR"

say "compiling sandbox-exec inside the rootfs"
cat >"$ROOTFS/tmp/sandbox-exec.c" <<'CSOURCE'
/* sandbox-exec: runs commands inside the nightshift sandbox container, as its unprivileged user.
 *
 *   sandbox-exec --init        container PID 1: reaps orphans, forever
 *   sandbox-exec --kill        SIGKILL every process of the caller's uid except PID 1, wait until
 *                              they are gone, then print "oom K\n", K being the container's cgroup
 *                              OOM kills so far
 *   sandbox-exec [-r NAME=SOFT:HARD]... [-e KEY=VALUE]... -- ARGV...
 *
 * The last form runs ARGV in a new session with exactly the given environment and rlimits (NAME is
 * cpu, as, nproc, fsize, nofile or core), waits for it, kills whatever it left behind (as the end of
 * a PID namespace would), and then appends one status record to stderr:
 *   "\0sandbox-exec exit N oom K\n"  or  "\0sandbox-exec signal N oom K\n"
 * where K is the container's cgroup OOM kill count by then.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ITEMS 256

static void on_signal(int sig) { (void)sig; }

static _Noreturn void init_main(void) {
    /* Only SIGCHLD gets a handler: a PID 1 ignores every other signal sent from inside, so the
     * sandboxed code cannot stop the container; the backend removes it with SIGKILL from outside. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t block, empty;
    sigemptyset(&empty);
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, NULL);
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        sigsuspend(&empty);
    }
}

static long long oom_kills(void) {
    static const char *files[] = {"/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f)
            continue;
        char key[64];
        long long value;
        while (fscanf(f, "%63s %lld", key, &value) == 2) {
            if (strcmp(key, "oom_kill") == 0) {
                fclose(f);
                return value;
            }
        }
        fclose(f);
    }
    return 0;
}

/* Processes of `uid` (zombies included) in this PID namespace, other than PID 1 and the caller. */
static int others_left(uid_t uid) {
    DIR *dir = opendir("/proc");
    if (!dir)
        return 0;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (*end != '\0' || pid <= 1 || pid == getpid())
            continue;
        char path[64];
        struct stat st;
        snprintf(path, sizeof path, "/proc/%ld", pid);
        if (stat(path, &st) == 0 && st.st_uid == uid)
            count++;
    }
    closedir(dir);
    return count;
}

static int kill_main(void) {
    int left = 1;
    for (int attempt = 0; attempt < 500 && left; attempt++) {
        if (kill(-1, SIGKILL) != 0 && errno != ESRCH)
            return 1;
        left = others_left(getuid());
        if (left)
            usleep(10000);
    }
    printf("oom %lld\n", oom_kills());
    return left ? 1 : 0;
}

static int parse_rlimit(const char *spec, int *resource, struct rlimit *rl) {
    static const struct {
        const char *name;
        int resource;
    } names[] = {
        {"cpu", RLIMIT_CPU},     {"as", RLIMIT_AS},         {"nproc", RLIMIT_NPROC},
        {"fsize", RLIMIT_FSIZE}, {"nofile", RLIMIT_NOFILE}, {"core", RLIMIT_CORE},
    };
    const char *eq = strchr(spec, '=');
    if (!eq)
        return -1;
    size_t len = (size_t)(eq - spec);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (strlen(names[i].name) == len && strncmp(spec, names[i].name, len) == 0) {
            unsigned long long soft, hard;
            if (sscanf(eq + 1, "%llu:%llu", &soft, &hard) != 2 || soft > hard)
                return -1;
            *resource = names[i].resource;
            rl->rlim_cur = soft;
            rl->rlim_max = hard;
            return 0;
        }
    }
    return -1;
}

static void usage(void) {
    fputs("usage: sandbox-exec --init | --kill | [-r NAME=SOFT:HARD]... [-e KEY=VALUE]... -- ARGV...\n", stderr);
    exit(125);
}

int main(int argc, char **argv) {
    /* --kill and the end of every run signal all processes of the caller's uid: never as root. */
    if (getuid() == 0 || geteuid() == 0) {
        fputs("sandbox-exec: refusing to run as root\n", stderr);
        return 125;
    }
    if (argc == 2 && strcmp(argv[1], "--init") == 0)
        init_main();
    if (argc == 2 && strcmp(argv[1], "--kill") == 0)
        return kill_main();

    int resources[MAX_ITEMS];
    struct rlimit limits[MAX_ITEMS];
    char *env[MAX_ITEMS + 1];
    int nlimits = 0, nenv = 0, i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (i + 1 >= argc || nlimits >= MAX_ITEMS || nenv >= MAX_ITEMS)
            usage();
        if (strcmp(argv[i], "-r") == 0) {
            if (parse_rlimit(argv[++i], &resources[nlimits], &limits[nlimits]) != 0)
                usage();
            nlimits++;
        } else if (strcmp(argv[i], "-e") == 0 && strchr(argv[i + 1], '=')) {
            env[nenv++] = argv[++i];
        } else {
            usage();
        }
    }
    if (i >= argc)
        usage();
    env[nenv] = NULL;

    /* Orphans of the command are reparented here, so every one of them can be reaped. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "sandbox-exec: fork: %s\n", strerror(errno));
        return 125;
    }
    if (child == 0) {
        setsid();
        /* Under memory pressure the cgroup OOM killer picks the command, not PID 1. */
        int fd = open("/proc/self/oom_score_adj", O_WRONLY);
        if (fd >= 0) {
            if (write(fd, "1000", 4) < 0) {
            }
            close(fd);
        }
        for (int k = 0; k < nlimits; k++) {
            if (setrlimit(resources[k], &limits[k]) != 0) {
                fprintf(stderr, "sandbox-exec: setrlimit: %s\n", strerror(errno));
                _exit(125);
            }
        }
        environ = env;
        execvp(argv[i], argv + i);
        int err = errno;
        fprintf(stderr, "sandbox-exec: failed to execute %s: %s\n", argv[i], strerror(err));
        _exit(err == ENOENT ? 127 : 126);
    }
    int status = 0;
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid == child) {
            status = st;
            break;
        }
        if (pid < 0 && errno != EINTR) {
            fprintf(stderr, "sandbox-exec: wait: %s\n", strerror(errno));
            return 125;
        }
    }
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
    }
    long long oom = oom_kills();
    if (WIFSIGNALED(status))
        fprintf(stderr, "%csandbox-exec signal %d oom %lld\n", 0, WTERMSIG(status), oom);
    else
        fprintf(stderr, "%csandbox-exec exit %d oom %lld\n", 0, WEXITSTATUS(status), oom);
    return 0;
}
CSOURCE
chroot "$ROOTFS" gcc -O2 -Wall -Wextra -Werror -o /usr/local/bin/sandbox-exec /tmp/sandbox-exec.c
rm -f "$ROOTFS/tmp/sandbox-exec.c"

say "trimming the rootfs to what the bwrap sandbox shows too"
# Like the bwrap backend: /usr (and the merged-/usr links), from /etc only what the linker needs, and
# empty mount points; no /etc/passwd, /root, /home or /var for a program to read.
find "$ROOTFS" -mindepth 1 -maxdepth 1 \! \( -name usr -o -name bin -o -name lib -o -name lib64 \
  -o -name sbin -o -name etc \) -exec rm -rf --one-file-system {} +
find "$ROOTFS/etc" -mindepth 1 -maxdepth 1 \! \( -name alternatives -o -name ld.so.cache \) \
  -exec rm -rf --one-file-system {} +
rm -rf "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
  "$ROOTFS"/usr/share/locale/*
mkdir -p "$ROOTFS"/{dev,proc,sys,tmp,sandbox,opt/rust}
chmod 1777 "$ROOTFS/tmp"

say "importing $(du -sh --one-file-system "$ROOTFS" | cut -f1) as $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . |
  docker import --change "LABEL $LABEL=$IMAGE_VERSION" --change 'WORKDIR /sandbox' \
    --change 'CMD ["/usr/local/bin/sandbox-exec", "--init"]' - "$IMAGE" >/dev/null
if [ -n "$previous_id" ]; then
  docker image rm "$previous_id" >/dev/null 2>&1 || true
fi
say "built $IMAGE"
