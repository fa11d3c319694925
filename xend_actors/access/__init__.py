"""Access: who a client is and what it may do (the host rules of xend-hosts-allow), below
every door that checks it."""
