"""Fleet learning on Flower: every device's own class statistics summed by a server and the total sent back.

update.py (what a device sends: compact, labelled with its bundle), total.py
(the server's running sum), node.py (a device's side on its state dir),
server_app.py / client_app.py (the Flower apps; only these import flwr),
launch.py (Flower's programs started offline, with TLS and node
authentication passed through), processes.py (stopping them, and what they
started, by PID). Nothing here is imported by the rest of
edgecvm, which runs without Flower installed (the extra ``edgecvm[fleet]``).
"""
