# A module from module_paths: the message of the day, from a template.
class motd {
  file { '/etc/motd':
    ensure  => file,
    mode    => '0644',
    content => epp('motd/motd.epp', { 'title' => $facts['site_title'] }),
  }
}
