# Applied by examples/debian-12-puppet.yaml with puppet apply (masterless) in the guest.
node default {
  include motd

  package { 'nginx-light':
    ensure => installed,
  }

  file { '/var/www/html/index.html':
    ensure  => file,
    mode    => '0644',
    content => "<!doctype html>\n<title>${facts['site_title']}</title>\n<h1>${facts['site_title']}</h1>\n<p>Configured by Puppet for ${facts['kiln_build_name']}.</p>\n",
    require => Package['nginx-light'],
  }

  service { 'nginx':
    ensure    => running,
    enable    => true,
    subscribe => File['/var/www/html/index.html'],
  }
}
