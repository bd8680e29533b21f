# The uWSGI application of the zerg test.
def application(environ, start_response):
    body = b"hello from uwsgi\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
