(function(){var r=document.documentElement;
function fail(m){var p=r.getAttribute('data-report-error');r.setAttribute('data-report-error',(p?p+'; ':'')+String(m));}
window.onerror=function(m,s,l,c){fail(m+' at '+l+':'+c);};
window.addEventListener('unhandledrejection',function(e){fail(e.reason);});
document.addEventListener('securitypolicyviolation',function(e){fail('blocked '+e.blockedURI+' ('+e.violatedDirective+')');});
})();
