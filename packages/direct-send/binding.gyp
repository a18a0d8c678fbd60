{
  "targets": [
    {
      "target_name": "direct_send",
      "sources": ["native/direct_send.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
