/* The UDP receive-answer-send loop of dnsd.server.UDPAnswerThread, in C.
 *
 * Why: at real query rates the Python loop around Answerer.answer (recvfrom, the address as a
 * string, sendto parsing it back, one system call each way per datagram) costs more CPU than the
 * answer itself. Here datagrams are read with recvmmsg (as many as wait, up to BATCH, blocking
 * until at least one), each is answered by calling the Python `answer(data, src, True)`, and the
 * replies go out with one sendmmsg to the addresses they came from. The answer path, its rules and
 * its caches stay in Python; this file only moves bytes.
 *
 * serve(fd, answer, stop, failed) -> None
 *   fd       a bound UDP socket (blocking)
 *   answer   callable(bytes, str, bool) -> bytes | None
 *   stop     a bytearray of one byte, read after every batch: not 0 ends the loop (set it, then
 *            shutdown() the socket, which makes a blocked recvmmsg return)
 *   failed   callable(exception), called when `answer` raises (it never should); the datagram is
 *            dropped and the loop goes on
 * Returns when stop[0] is set, the socket is shut down or closed (EBADF, ENOTSOCK, EINVAL).
 * The GIL is released while waiting and while sending.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 32
#define BUFSIZE 8192          /* as the Python loop's recvfrom(8192) */

struct slot {
    struct sockaddr_storage addr;
    struct iovec iov;
    char buf[BUFSIZE];
};

/* The source address as a str, reusing the last one made when the address is the same: a
 * server's clients are mostly a few resolvers, each sending many queries. */
struct src_cache {
    int family;
    unsigned char ip[16];
    PyObject *text;
};

static PyObject *
src_text(struct src_cache *c, const struct sockaddr_storage *ss)
{
    char out[INET6_ADDRSTRLEN];
    const void *ip;
    size_t n;
    if (ss->ss_family == AF_INET) {
        ip = &((const struct sockaddr_in *)ss)->sin_addr;
        n = 4;
    } else if (ss->ss_family == AF_INET6) {
        ip = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        n = 16;
    } else {
        return PyUnicode_FromString("");
    }
    if (c->text != NULL && c->family == ss->ss_family && memcmp(c->ip, ip, n) == 0) {
        Py_INCREF(c->text);
        return c->text;
    }
    if (inet_ntop(ss->ss_family, ip, out, sizeof out) == NULL)
        return PyUnicode_FromString("");
    PyObject *t = PyUnicode_FromString(out);
    if (t == NULL)
        return NULL;
    Py_XSETREF(c->text, t);
    Py_INCREF(t);
    c->family = ss->ss_family;
    memcpy(c->ip, ip, n);
    return t;
}

/* Hand the exception `answer` raised to `failed` (the caller's logger), and clear it. */
static void
report(PyObject *failed)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v != NULL && tb != NULL)
        PyException_SetTraceback(v, tb);
    PyObject *r = v != NULL ? PyObject_CallOneArg(failed, v) : NULL;
    if (r == NULL && PyErr_Occurred())
        PyErr_WriteUnraisable(failed);
    Py_XDECREF(r);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
}

static PyObject *
serve(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd;
    PyObject *answer, *stop, *failed;
    if (!PyArg_ParseTuple(args, "iOYO:serve", &fd, &answer, &stop, &failed))
        return NULL;
    if (!PyCallable_Check(answer) || !PyCallable_Check(failed) || PyByteArray_GET_SIZE(stop) < 1) {
        PyErr_SetString(PyExc_TypeError, "serve(fd, answer, stop, failed): answer and failed "
                        "callable, stop a bytearray of one byte");
        return NULL;
    }
    struct slot *slots = PyMem_RawCalloc(BATCH, sizeof(struct slot));
    struct mmsghdr *in = PyMem_RawCalloc(BATCH, sizeof(struct mmsghdr));
    struct mmsghdr *out = PyMem_RawCalloc(BATCH, sizeof(struct mmsghdr));
    struct iovec *oiov = PyMem_RawCalloc(BATCH, sizeof(struct iovec));
    PyObject **replies = PyMem_RawCalloc(BATCH, sizeof(PyObject *));
    if (!slots || !in || !out || !oiov || !replies) {
        PyMem_RawFree(slots); PyMem_RawFree(in); PyMem_RawFree(out);
        PyMem_RawFree(oiov); PyMem_RawFree(replies);
        return PyErr_NoMemory();
    }
    Py_INCREF(stop);                /* read without the caller's reference */
    volatile char *stopped = PyByteArray_AS_STRING(stop);
    struct src_cache cache = {0, {0}, NULL};
    PyObject *result = Py_None;

    for (int i = 0; i < BATCH; i++) {     /* calloc zeroed the rest */
        slots[i].iov.iov_base = slots[i].buf;
        slots[i].iov.iov_len = BUFSIZE;
        in[i].msg_hdr.msg_name = &slots[i].addr;
        in[i].msg_hdr.msg_namelen = sizeof slots[i].addr;
        in[i].msg_hdr.msg_iov = &slots[i].iov;
        in[i].msg_hdr.msg_iovlen = 1;
    }
    int n = 0;
    for (;;) {
        for (int i = 0; i < n; i++)         /* what the last receive wrote over */
            in[i].msg_hdr.msg_namelen = sizeof slots[i].addr;
        int err;
        Py_BEGIN_ALLOW_THREADS
        n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
        err = errno;
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (err == EBADF || err == ENOTSOCK || err == EINVAL || *stopped)
                break;
            continue;               /* EINTR, or ECONNREFUSED from an ICMP error: not ours */
        }
        int m = 0, shut = 0;
        for (int i = 0; i < n; i++) {
            if (in[i].msg_len == 0 && in[i].msg_hdr.msg_namelen == 0) {
                shut = 1;           /* shutdown(): this socket receives nothing more */
                continue;
            }
            PyObject *data = PyBytes_FromStringAndSize(slots[i].buf, in[i].msg_len);
            PyObject *src = data ? src_text(&cache, &slots[i].addr) : NULL;
            PyObject *r = NULL;
            if (src != NULL) {
                PyObject *argv[3] = {data, src, Py_True};
                r = PyObject_Vectorcall(answer, argv, 3, NULL);
            }
            Py_XDECREF(data);
            Py_XDECREF(src);
            if (r == NULL) {
                report(failed);                  /* Answerer.answer never raises; serve on */
                continue;
            }
            if (!PyBytes_Check(r)) {             /* None: stay silent */
                Py_DECREF(r);
                continue;
            }
            replies[m] = r;
            oiov[m].iov_base = PyBytes_AS_STRING(r);
            oiov[m].iov_len = PyBytes_GET_SIZE(r);
            memset(&out[m].msg_hdr, 0, sizeof out[m].msg_hdr);
            out[m].msg_hdr.msg_name = &slots[i].addr;
            out[m].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
            out[m].msg_hdr.msg_iov = &oiov[m];
            out[m].msg_hdr.msg_iovlen = 1;
            m++;
        }
        if (m) {
            Py_BEGIN_ALLOW_THREADS
            int done = 0;
            while (done < m) {
                int s = sendmmsg(fd, out + done, m - done, 0);
                if (s > 0)
                    done += s;
                else if (s == 0 || errno != EINTR)
                    done++;                     /* EAGAIN/ENOBUFS in a flood: drop, keep serving */
            }
            Py_END_ALLOW_THREADS
            for (int i = 0; i < m; i++)
                Py_DECREF(replies[i]);
        }
        if (*stopped || shut)
            break;
    }
    Py_DECREF(stop);
    Py_XDECREF(cache.text);
    PyMem_RawFree(slots); PyMem_RawFree(in); PyMem_RawFree(out);
    PyMem_RawFree(oiov); PyMem_RawFree(replies);
    Py_INCREF(result);
    return result;
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS,
     "serve(fd, answer, stop, failed): answer DNS over UDP on fd until stop[0] (dnsd.server)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dnsd._udpio",
    "recvmmsg/sendmmsg loop of the UDP answer thread (dnsd.server.UDPAnswerThread)", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__udpio(void)
{
    return PyModule_Create(&module);
}
