/*
 * mq-pingpong: the C baseline for bench/run.ts. Built by the bench runner with
 *   gcc -O2 -o bench/build/mq-pingpong bench/c/mq-pingpong.c
 * Every mode works on a queue id the runner created (IPC_PRIVATE) and removes; nothing here
 * creates or removes queues. Every mode prints one JSON line on stdout.
 *
 *   pingpong <qid> <warmup_ms> <measure_ms> <size>
 *       fork: the child answers each request (mtype 100) with a reply (mtype 1000); the parent
 *       sends one request, waits for its reply, repeats. Round trips/s and RTT percentiles.
 *   pipeline <qid> <window> <warmup_ms> <measure_ms> <size>
 *       same pair, but the parent keeps <window> requests in flight: it sends <window> at the
 *       start, then for every reply it receives it sends one new request. Answered requests/s.
 *   flood <qid> <mtype> <run_ms> <size> <burst> <period_us>
 *       producer for the hand-over scenario: sends <burst> messages of <mtype> every
 *       <period_us> (0: as fast as the queue takes them, blocking msgsnd when it is full).
 *       The first 8 bytes of every message are CLOCK_MONOTONIC in ns at send time (the
 *       clock Node's process.hrtime uses), the next 8 a sequence number.
 * pingpong and pipeline honour BENCH_PIN (same | split), see pin().
 *
 *   callcost <qid> <iterations> <size>
 *       msgsnd(IPC_NOWAIT) and msgrcv(IPC_NOWAIT) cost per call, in blocks of 512
 *       sends then 512 receives, plus msgrcv on an empty queue (ENOMSG).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MTYPE_REQ 100
#define MTYPE_REP 1000
#define MAX_TEXT 8192

struct msg {
  long mtype;
  char mtext[MAX_TEXT];
};

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double run_started_ns;

/* CPU seconds of this process and its waited-for children (the responder), for the runner's
 * "other load on the machine" estimate. */
static double cpu_seconds(void) {
  struct rusage a, b;
  getrusage(RUSAGE_SELF, &a);
  getrusage(RUSAGE_CHILDREN, &b);
  return a.ru_utime.tv_sec + a.ru_utime.tv_usec / 1e6 + a.ru_stime.tv_sec + a.ru_stime.tv_usec / 1e6 + b.ru_utime.tv_sec +
         b.ru_utime.tv_usec / 1e6 + b.ru_stime.tv_sec + b.ru_stime.tv_usec / 1e6;
}

/* utime + stime of a process from /proc/<pid>/stat, in seconds (clock-tick resolution). */
static double proc_cpu(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return 0;
  unsigned long long ut = 0, st = 0;
  /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ,"cpuSec":..,"wallSec":.. for the end of a JSON line. */
static void print_cpu(void) {
  printf(",\"cpuSec\":%.3f,\"wallSec\":%.3f}\n", cpu_seconds(), (now_ns() - run_started_ns) / 1e9);
}

static void die(const char *what) {
  fprintf(stderr, "mq-pingpong: %s: %s\n", what, strerror(errno));
  exit(2);
}

static int snd(int q, struct msg *m, size_t size, int flags) {
  for (;;) {
    if (msgsnd(q, m, size, flags) == 0) return 0;
    if (errno == EINTR) continue;
    return -1;
  }
}

static ssize_t rcv(int q, struct msg *m, long mtype, int flags) {
  for (;;) {
    ssize_t n = msgrcv(q, m, MAX_TEXT, mtype, flags);
    if (n >= 0 || errno != EINTR) return n;
  }
}

/* The responder: answers every request until the queue goes away or it is killed. */
static void responder(int q) {
  struct msg m;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  for (;;) {
    ssize_t n = rcv(q, &m, MTYPE_REQ, 0);
    if (n < 0) _exit(errno == EIDRM || errno == EINVAL ? 0 : 3);
    m.mtype = MTYPE_REP;
    if (snd(q, &m, (size_t)n, 0) != 0) _exit(errno == EIDRM || errno == EINVAL ? 0 : 3);
  }
}

/* BENCH_PIN=same: both processes on CPU 0; split: sender on CPU 0, responder on CPU 1;
 * unset: wherever the scheduler puts them (which varies from run to run, and so does the
 * result: a wake-up on the same CPU is a context switch, on another one an IPI). */
static void pin(int responder_side) {
  const char *p = getenv("BENCH_PIN");
  if (!p || !*p) return;
  int cpu = 0;
  if (!strcmp(p, "split")) cpu = responder_side ? 1 : 0;
  else if (strcmp(p, "same") != 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
}

static pid_t start_responder(int q) {
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    pin(1);
    responder(q);
  }
  pin(0);
  return pid;
}

static void stop_responder(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int mode_pingpong(int q, double warmup_ms, double measure_ms, size_t size) {
  struct msg m;
  memset(&m, 0, sizeof m);
  pid_t child = start_responder(q);
  size_t cap = 1 << 22, nlat = 0;
  double *lat = malloc(cap * sizeof *lat);
  if (!lat) die("malloc");
  double t0 = now_ns(), start = t0 + warmup_ms * 1e6, stop = start + measure_ms * 1e6, measured_from = 0, cpu0 = 0;
  long count = 0;
  for (;;) {
    double a = now_ns();
    if (a >= stop) break;
    if (measured_from == 0 && a >= start) measured_from = a, count = 0, nlat = 0, cpu0 = proc_cpu(getpid()) + proc_cpu(child);
    m.mtype = MTYPE_REQ;
    memcpy(m.mtext, &count, sizeof count);
    if (snd(q, &m, size, 0) != 0) die("msgsnd");
    if (rcv(q, &m, MTYPE_REP, 0) < 0) die("msgrcv");
    double b = now_ns();
    count++;
    if (nlat < cap) lat[nlat++] = b - a;
  }
  double elapsed = now_ns() - measured_from;
  double wcpu = proc_cpu(getpid()) + proc_cpu(child) - cpu0;
  stop_responder(child);
  qsort(lat, nlat, sizeof *lat, cmp_double);
  printf("{\"mode\":\"pingpong\",\"roundTrips\":%ld,\"seconds\":%.6f,\"perSecond\":%.1f,"
         "\"rttP50us\":%.2f,\"rttP99us\":%.2f,\"rttMeanUs\":%.2f,\"windowCpuPct\":%.1f,\"cpuUsPerOp\":%.3f",
         count, elapsed / 1e9, count / (elapsed / 1e9), lat[nlat / 2] / 1e3, lat[(size_t)(nlat * 0.99)] / 1e3,
         elapsed / count / 1e3, wcpu / (elapsed / 1e9) * 100, wcpu * 1e6 / count);
  print_cpu();
  free(lat);
  return 0;
}

static int mode_pipeline(int q, long window, double warmup_ms, double measure_ms, size_t size) {
  struct msg m;
  memset(&m, 0, sizeof m);
  pid_t child = start_responder(q);
  long seq = 0, answered = 0, base = 0;
  m.mtype = MTYPE_REQ;
  for (long i = 0; i < window; i++) {
    memcpy(m.mtext, &seq, sizeof seq);
    seq++;
    if (snd(q, &m, size, 0) != 0) die("msgsnd");
  }
  double t0 = now_ns(), start = t0 + warmup_ms * 1e6, stop = start + measure_ms * 1e6, measured_from = 0, t = t0, cpu0 = 0;
  for (;;) {
    if ((answered & 63) == 0) {
      t = now_ns();
      if (t >= stop) break;
      if (measured_from == 0 && t >= start) measured_from = t, base = answered, cpu0 = proc_cpu(getpid()) + proc_cpu(child);
    }
    if (rcv(q, &m, MTYPE_REP, 0) < 0) die("msgrcv");
    answered++;
    m.mtype = MTYPE_REQ;
    memcpy(m.mtext, &seq, sizeof seq);
    seq++;
    if (snd(q, &m, size, 0) != 0) die("msgsnd");
  }
  double elapsed = t - measured_from;
  long counted = answered - base;
  double wcpu = proc_cpu(getpid()) + proc_cpu(child) - cpu0;
  stop_responder(child);
  printf("{\"mode\":\"pipeline\",\"window\":%ld,\"answered\":%ld,\"seconds\":%.6f,\"perSecond\":%.1f,"
         "\"windowCpuPct\":%.1f,\"cpuUsPerOp\":%.3f",
         window, counted, elapsed / 1e9, counted / (elapsed / 1e9), wcpu / (elapsed / 1e9) * 100, wcpu * 1e6 / counted);
  print_cpu();
  return 0;
}

static void on_alarm(int sig) { (void)sig; }

static int mode_flood(int q, long mtype, double run_ms, size_t size, long burst, long period_us) {
  struct msg m;
  memset(&m, 0, sizeof m);
  m.mtype = mtype;
  if (size < 16) size = 16;
  double stop = now_ns() + run_ms * 1e6;
  long sent = 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm; /* no SA_RESTART: msgsnd returns EINTR */
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval it = {{0, 50000}, {(long)(run_ms / 1000), (long)((long)run_ms % 1000) * 1000}};
  setitimer(ITIMER_REAL, &it, NULL);
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (;;) {
    if (period_us > 0) {
      next.tv_nsec += period_us * 1000;
      while (next.tv_nsec >= 1000000000L) next.tv_nsec -= 1000000000L, next.tv_sec++;
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
      }
    }
    double t = now_ns();
    if (t >= stop) break;
    for (long i = 0; i < burst; i++) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      int64_t stamp = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
      int64_t s = sent;
      memcpy(m.mtext, &stamp, 8);
      memcpy(m.mtext + 8, &s, 8);
      /* Blocking send; SIGALRM at the end of the run interrupts one stuck on a full queue
       * whose consumer has stopped. */
      if (msgsnd(q, &m, size, 0) != 0) {
        if (errno == EINTR) {
          if (now_ns() >= stop) goto done;
          i--;
          continue;
        }
        if (errno == EIDRM || errno == EINVAL) goto done;
        die("msgsnd");
      }
      sent++;
    }
  }
done:
  printf("{\"mode\":\"flood\",\"sent\":%ld", sent);
  print_cpu();
  return 0;
}

static int mode_callcost(int q, long iterations, size_t size) {
  struct msg m;
  memset(&m, 0, sizeof m);
  const int block = 512;
  double tsnd = 0, trcv = 0, tempty = 0;
  long n = 0;
  while (n < iterations) {
    double a = now_ns();
    for (int i = 0; i < block; i++) {
      m.mtype = MTYPE_REQ;
      if (msgsnd(q, &m, size, IPC_NOWAIT) != 0) die("msgsnd");
    }
    double b = now_ns();
    for (int i = 0; i < block; i++) {
      if (msgrcv(q, &m, MAX_TEXT, MTYPE_REQ, IPC_NOWAIT) < 0) die("msgrcv");
    }
    double c = now_ns();
    for (int i = 0; i < block; i++) {
      if (msgrcv(q, &m, MAX_TEXT, MTYPE_REQ, IPC_NOWAIT) >= 0 || errno != ENOMSG) die("msgrcv(empty)");
    }
    double d = now_ns();
    tsnd += b - a, trcv += c - b, tempty += d - c;
    n += block;
  }
  printf("{\"mode\":\"callcost\",\"calls\":%ld,\"msgsndUs\":%.3f,\"msgrcvUs\":%.3f,\"msgrcvEmptyUs\":%.3f}\n", n, tsnd / n / 1e3,
         trcv / n / 1e3, tempty / n / 1e3);
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: mq-pingpong pingpong <qid> <warmup_ms> <measure_ms> <size>\n"
          "       mq-pingpong pipeline <qid> <window> <warmup_ms> <measure_ms> <size>\n"
          "       mq-pingpong flood <qid> <mtype> <run_ms> <size> <burst> <period_us>\n"
          "       mq-pingpong callcost <qid> <iterations> <size>\n");
  exit(64);
}

int main(int argc, char **argv) {
  if (argc < 3) usage();
  /* Dies with the bench runner, whatever happens to it. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 1;
  setvbuf(stdout, NULL, _IOLBF, 0);
  run_started_ns = now_ns();
  int q = atoi(argv[2]);
  const char *mode = argv[1];
  if (!strcmp(mode, "pingpong") && argc == 6) {
    size_t size = (size_t)atol(argv[5]);
    if (size < sizeof(long) || size > MAX_TEXT) usage();
    return mode_pingpong(q, atof(argv[3]), atof(argv[4]), size);
  }
  if (!strcmp(mode, "pipeline") && argc == 7) {
    size_t size = (size_t)atol(argv[6]);
    if (size < sizeof(long) || size > MAX_TEXT) usage();
    return mode_pipeline(q, atol(argv[3]), atof(argv[4]), atof(argv[5]), size);
  }
  if (!strcmp(mode, "flood") && argc == 8) {
    size_t size = (size_t)atol(argv[5]);
    if (size > MAX_TEXT) usage();
    return mode_flood(q, atol(argv[3]), atof(argv[4]), size, atol(argv[6]), atol(argv[7]));
  }
  if (!strcmp(mode, "callcost") && argc == 5) {
    size_t size = (size_t)atol(argv[4]);
    if (size < 1 || size > MAX_TEXT) usage();
    return mode_callcost(q, atol(argv[3]), size);
  }
  usage();
  return 64;
}
