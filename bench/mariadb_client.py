"""A MariaDB client through libmariadb (ctypes), for the bench scripts: no client program's start-up in
the timed path. The scripts put bench/ on PYTHONPATH."""
import ctypes
import sys

lib = ctypes.CDLL("libmariadb.so.3")
lib.mysql_init.restype = ctypes.c_void_p
lib.mysql_init.argtypes = [ctypes.c_void_p]
lib.mysql_real_connect.restype = ctypes.c_void_p
lib.mysql_real_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                   ctypes.c_char_p, ctypes.c_uint, ctypes.c_char_p, ctypes.c_ulong]
lib.mysql_query.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.mysql_error.restype = ctypes.c_char_p
lib.mysql_error.argtypes = [ctypes.c_void_p]
lib.mysql_store_result.restype = ctypes.c_void_p
lib.mysql_store_result.argtypes = [ctypes.c_void_p]
lib.mysql_free_result.argtypes = [ctypes.c_void_p]
lib.mysql_fetch_row.restype = ctypes.POINTER(ctypes.c_char_p)
lib.mysql_fetch_row.argtypes = [ctypes.c_void_p]


def connect(socket_path):
    """A connection as root over the server's unix socket; exits naming the error if refused."""
    conn = lib.mysql_init(None)
    if not lib.mysql_real_connect(conn, b"localhost", b"root", None, None, 0, socket_path.encode(), 0):
        sys.exit("connect: %s" % lib.mysql_error(conn))
    return conn


def query(conn, statement, fetch=True):
    """Runs statement (exits naming it on error); with fetch, the first column of every row."""
    if lib.mysql_query(conn, statement.encode()) != 0:
        sys.exit("%s: %s" % (statement, lib.mysql_error(conn).decode()))
    rows = []
    if fetch:
        result = lib.mysql_store_result(conn)
        if result:
            while True:
                row = lib.mysql_fetch_row(result)
                if not row:
                    break
                rows.append(row[0])
            lib.mysql_free_result(result)
    return rows
