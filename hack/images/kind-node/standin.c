/* A stand-in for an image that kind's node-image builder insists on preloading but that
 * canaryguard's node image does not use (hack/images/kind-node.sh): kindnetd (the node image
 * brings its own CNI configuration) and the local-path provisioner and helper (no storage
 * provisioner). kind's builder fetches every image it names unless an archive carries its
 * tag, and nothing can be fetched here; the stand-in only says what it is and fails. */
#include <stdio.h>

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fputs("canaryguard kind node image: this image is a stand-in, not the real one. The node "
        "image configures its own CNI (bridge) and has no storage provisioner; nothing "
        "should run this.\n",
        stderr);
  return 1;
}
