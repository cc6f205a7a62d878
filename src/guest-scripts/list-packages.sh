# shellcheck shell=sh
# The guest's installed packages, the licences they state and the OS they belong to, for the manifest
# and the SBOMs (src/build/steps/sbom.ts parses it): sections marked by "#" lines on stdout.
# dpkg: each package's state too (removed packages whose configuration is left are not installed);
# licences from the machine-readable copyright files (a first line "Format: ..."; one awk over all of
# them). rpm: the LICENSE tag.
echo "#os"; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
if command -v dpkg-query >/dev/null 2>&1; then
  echo "#dpkg"
  # shellcheck disable=SC2016 # dpkg-query's own ${field} syntax
  dpkg-query -W -f='${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n'
  echo "#licenses"
  awk 'FNR==1{n=FILENAME; sub("^/usr/share/doc/","",n); sub("/copyright$","",n); m=($0 ~ /^Format:/)} m && /^License:/{sub(/^License:[ \t]*/,""); sub(/[ \t\r]+$/,""); if($0!="") print n "\t" $0}' /usr/share/doc/*/copyright 2>/dev/null
# busybox ships an "rpm" applet without --qf: only a working rpm counts.
elif command -v rpm >/dev/null 2>&1 && out=$(rpm -qa --qf '%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n' 2>/dev/null); then
  echo "#rpm"; printf "%s\n" "$out"
  echo "#licenses"; rpm -qa --qf '%{NAME}\t%{LICENSE}\n' 2>/dev/null
else echo "#none"; fi
